"""The start-up check for the system libraries of Qt's xcb plugin, and the README and .deb
lists that repeat ui/qt_requirements.py's map."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ui.app
from ui import qt_requirements
from ui.qt_requirements import XCB_LIBRARIES, check_qt_requirements

ROOT = Path(__file__).resolve().parent.parent
X11_SESSION = {"DISPLAY": ":0"}
BASE_SYSTEM = re.compile(r"^(libc|libm|libstdc\+\+|libgcc_s|libglib-2\.0|libgthread-2\.0|libz|ld-linux.*)\.so")


@pytest.fixture(autouse=True)
def on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")


def all_but(*missing: str):
    return lambda soname: soname not in missing


def test_a_missing_library_is_named_with_its_package() -> None:
    message = check_qt_requirements(X11_SESSION, all_but("libxcb-icccm.so.4"))
    assert message == ("Enclave needs the system library libxcb-icccm.so.4: install it with "
                       "'sudo apt install libxcb-icccm4' (or your distribution's equivalent).")


def test_every_missing_library_is_in_the_one_line() -> None:
    message = check_qt_requirements(X11_SESSION, all_but("libxcb-icccm.so.4", "libxcb-keysyms.so.1"))
    assert message is not None and "\n" not in message
    assert "libraries libxcb-icccm.so.4, libxcb-keysyms.so.1:" in message
    assert "'sudo apt install libxcb-icccm4 libxcb-keysyms1'" in message


def test_silent_when_every_library_loads() -> None:
    assert check_qt_requirements(X11_SESSION, lambda soname: True) is None


@pytest.mark.parametrize("environ", [
    {"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"},
    {"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":0"},
    {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"},  # Qt tries its Wayland plugin first
    {"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"},
    {},  # no display at all: the CLI says so before the window is tried
])
def test_skipped_when_qt_will_not_use_xcb(environ: dict[str, str]) -> None:
    asked: list[str] = []
    assert check_qt_requirements(environ, lambda soname: asked.append(soname) or False) is None
    assert asked == []


@pytest.mark.parametrize("environ", [
    {"DISPLAY": ":0"},
    {"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"},
    {"QT_QPA_PLATFORM": "xcb:nomitshm", "DISPLAY": ":0"},
])
def test_checked_when_qt_will_use_xcb(environ: dict[str, str]) -> None:
    assert "libxcb-keysyms1" in (check_qt_requirements(environ, all_but("libxcb-keysyms.so.1")) or "")


def test_not_checked_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert check_qt_requirements(X11_SESSION, lambda soname: False) is None


def test_main_prints_the_line_and_exits_2_before_making_the_window(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("XDG_SESSION_TYPE", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(qt_requirements, "library_loads", all_but("libxcb-icccm.so.4"))
    monkeypatch.setattr(ui.app, "application", lambda argv=None: pytest.fail("QApplication was made"))
    assert ui.app.main([]) == ui.app.EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("Enclave needs the system library libxcb-icccm.so.4: install it with "
                            "'sudo apt install libxcb-icccm4' (or your distribution's equivalent).\n")


def test_the_real_loader_finds_bundled_and_system_libraries_and_not_a_made_up_one() -> None:
    assert qt_requirements.library_loads("libQt6Core.so.6")  # shipped in PySide6, not on the system
    assert qt_requirements.library_loads("libc.so.6")
    assert not qt_requirements.library_loads("libenclave-no-such-library.so.7")


def linux_libraries_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Linux system libraries", 1)[1]
    return section.split("\n#", 1)[0]


def test_readme_lists_every_package() -> None:
    words = set(re.findall(r"[\w.+-]+", linux_libraries_section()))
    assert sorted(set(XCB_LIBRARIES.values()) - words) == []


def test_the_deb_depends_on_every_package(tmp_path: Path) -> None:
    control = subprocess.run(["sh", "installers/linux/build_deb.sh", "--control-only"], cwd=ROOT,
                             env={**os.environ, "ENCLAVE_DIST": str(tmp_path)},
                             capture_output=True, text=True, check=True).stdout
    depends = re.search(r"^Depends: (.*)$", control, re.MULTILINE)
    assert depends is not None
    packages = {part.strip().split(" ")[0] for part in depends.group(1).split(",")}
    assert sorted(set(XCB_LIBRARIES.values()) - packages) == []


def needed(library: Path) -> list[str]:
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_the_map_covers_what_the_xcb_plugin_needs_from_the_system() -> None:
    qt = qt_requirements.bundled_library_folders()[0].parent
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        pytest.skip("this PySide6 has no xcb plugin")
    libraries = [plugin, *(qt / "lib" / name for name in ("libQt6XcbQpa.so.6", "libQt6Gui.so.6", "libQt6DBus.so.6"))]
    from_system = {soname for library in libraries for soname in needed(library)
                   if not (qt / "lib" / soname).exists() and not BASE_SYSTEM.match(soname)}
    assert from_system - set(XCB_LIBRARIES) == set()
    assert set(XCB_LIBRARIES) - from_system == set()


def test_the_gui_command_names_a_missing_library_before_qt_is_imported(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import ui.qt_requirements
    from app.cli.common import launch_gui

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(ui.qt_requirements, "check_qt_requirements",
                        lambda: "Qt needs libxcb-cursor0: sudo apt install libxcb-cursor0")
    imported: list[str] = []
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name: imported.append(name) or real_import(name))
    with pytest.raises(SystemExit) as exited:
        launch_gui()
    assert exited.value.code == 2
    assert capsys.readouterr().err == "enclave: error: Qt needs libxcb-cursor0: sudo apt install libxcb-cursor0\n"
    assert "ui.app" not in imported  # stopped before Qt's GUI module could fail without naming a package
