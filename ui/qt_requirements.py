"""The system libraries Qt's xcb platform plugin (the X11 window) loads on Linux, and a check
that they are there before ``QApplication`` is made: a missing one is one line naming the
package to install, not Qt's "could not load the Qt platform plugin xcb" and an abort.

``XCB_LIBRARIES`` is the one list: the check uses it, the README's "Linux system libraries"
command and the .deb's ``Depends`` (installers/linux/build_deb.sh) repeat it, and tests keep
them in step. It is what ``readelf -d`` lists as NEEDED for PySide6's
``plugins/platforms/libqxcb.so`` and ``lib/libQt6{XcbQpa,Gui,DBus}.so.6``, less what PySide6
bundles and the base system every desktop has (libc, libstdc++, glib, zlib).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import PySide6

# soname -> Debian/Ubuntu package. libxcb first: most others fail to load without it.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
}


def bundled_library_folders() -> list[Path]:
    """Where a library shipped with Enclave itself lies: PySide6's Qt libraries and, in the
    PyInstaller build, the bundle's folder."""
    folders = [Path(PySide6.__file__).resolve().parent / "Qt" / "lib"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        folders.append(Path(bundle))
    return folders


def library_loads(soname: str) -> bool:
    """True if ``soname`` is shipped with Enclave or the system's dynamic loader finds it."""
    if any((folder / soname).exists() for folder in bundled_library_folders()):
        return True
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def uses_xcb(environ: Mapping[str, str]) -> bool:
    """Whether Qt will open its window through the xcb plugin (X11). QT_QPA_PLATFORM decides
    when set; otherwise on a Wayland session Qt tries its Wayland plugin first."""
    platform = environ.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(";")[0].split(":")[0] == "xcb"
    wayland = bool(environ.get("WAYLAND_DISPLAY")) or environ.get("XDG_SESSION_TYPE") == "wayland"
    return bool(environ.get("DISPLAY")) and not wayland


def missing_libraries(loads: Callable[[str], bool] = library_loads) -> dict[str, str]:
    """The sonames of ``XCB_LIBRARIES`` that do not load, with their packages."""
    return {soname: package for soname, package in XCB_LIBRARIES.items() if not loads(soname)}


def missing_message(missing: Mapping[str, str]) -> str:
    """One line: which libraries are missing and the apt command that installs them."""
    sonames = ", ".join(missing)
    packages = " ".join(dict.fromkeys(missing.values()))
    library = "library" if len(missing) == 1 else "libraries"
    it = "it" if len(missing) == 1 else "them"
    return (f"Enclave needs the system {library} {sonames}: install {it} with 'sudo apt install {packages}' "
            "(or your distribution's equivalent).")


def check_qt_requirements(environ: Mapping[str, str] | None = None,
                          loads: Callable[[str], bool] | None = None) -> str | None:
    """The message to show and stop on, or None when the window can open (or the check
    does not apply: not Linux, or not the xcb plugin)."""
    if not sys.platform.startswith("linux") or not uses_xcb(os.environ if environ is None else environ):
        return None
    missing = missing_libraries(loads or library_loads)
    return missing_message(missing) if missing else None
