"""Write assets/THIRD_PARTY_LICENSES: every distribution the app ships, with its licence.

    .venv/bin/python scripts/third_party_licenses.py [-o assets/THIRD_PARTY_LICENSES]

The list is the runtime dependency closure of the installed ``enclave`` distribution
(its requirements, recursively, without extras; dev and packaging tools are not shipped),
read with importlib.metadata: name, version, licence (License-Expression, License, or the
classifiers) and the text of every licence file the distribution ships. llama.cpp (vendored
in llama-cpp-python's shared libraries) and Qt (bundled with PySide6) get notes of their own.
Run it in the environment the app is built from; the output is committed and bundled.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "THIRD_PARTY_LICENSES"
LICENSE_FILE = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE|AUTHORS|COPYRIGHT)[^/]*$", re.IGNORECASE)
RULE = "=" * 78

LLAMA_CPP_LICENSE = """\
MIT License

Copyright (c) 2023-2024 The ggml authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

QT_NOTE = """\
Qt 6 and PySide6 / Shiboken6 (The Qt Company Ltd.) are used under the GNU Lesser
General Public License version 3 (LGPL-3.0-only). Enclave links to them dynamically:
the Qt libraries (libQt6*.so / Qt6*.dll / Qt*.framework) and the PySide6 and shiboken6
Python modules are separate files in the installed application (on Linux under
/opt/enclave/_internal/PySide6/, on Windows under _internal\\PySide6\\, on macOS in
Enclave.app/Contents/Frameworks/PySide6/) and you may replace them with your own
compatible builds. The complete corresponding source code is available from
https://download.qt.io/official_releases/qt/ (Qt) and
https://download.qt.io/official_releases/QtForPython/ (PySide6, Shiboken6), for the
versions named below; on request we provide it too. The PySide6 wheels ship no licence
file; the text of the LGPL-3.0 follows (also at https://www.gnu.org/licenses/lgpl-3.0.txt),
and of the GPL-3.0 it builds on at https://www.gnu.org/licenses/gpl-3.0.txt.
"""
# Required by a dependency's metadata but never imported, so not in the frozen app.
NOT_SHIPPED = {"pip"}  # sqlite-utils requires it for its `install` command only
LGPL3 = ROOT / "installers" / "licenses" / "LGPL-3.0.txt"  # the licence text (from Debian's common-licenses)

BUNDLED_NOTE = """\
The frozen application also contains the Python interpreter (Python Software Foundation
License) and shared libraries copied from the build system (for example the C++ and
OpenMP runtimes, ICU, OpenSSL, libffi, X11/XCB and font libraries), each under its own
licence as published by its authors and by the distribution it was built on.
"""


def runtime_closure(root: str = "enclave") -> list[metadata.Distribution]:
    """``root`` and everything it requires at run time, recursively (markers evaluated, no extras)."""
    env = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    todo = [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            print(f"warning: {name} is required but not installed", file=sys.stderr)
            continue
        if key in seen and not extras:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    seen.pop(canonicalize_name(root), None)
    for name in NOT_SHIPPED:
        seen.pop(canonicalize_name(name), None)
    return sorted(seen.values(), key=lambda d: canonicalize_name(d.metadata["Name"]))


def licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression.strip()
    text = (meta.get("License") or "").strip()
    if text and len(text) < 100 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    return "see the licence text below" if text else "unknown (no licence metadata)"


def licence_texts(dist: metadata.Distribution) -> list[tuple[str, str]]:
    texts = []
    seen: set[str] = set()
    for file in dist.files or []:
        name = str(file)
        if not LICENSE_FILE.search(name) or name.endswith((".py", ".pyc")):
            continue
        try:
            text = Path(file.locate()).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text and text not in seen:
            seen.add(text)
            texts.append((name.split("/")[-1], text))
    if not texts:
        text = (dist.metadata.get("License") or "").strip()
        if "\n" in text or len(text) >= 100:
            texts.append(("License (from the package metadata)", text))
    return texts


def render() -> str:
    from app import __version__

    dists = runtime_closure()
    out = [
        f"Enclave {__version__} — third-party software",
        RULE,
        "",
        "Enclave itself is licensed under the Apache License 2.0. It ships the following",
        "third-party software, each under its own licence. This file is generated by",
        "scripts/third_party_licenses.py from the installed packages' metadata.",
        "",
        "Summary",
        "-------",
    ]
    width = max(len(d.metadata["Name"]) for d in dists) + 2
    out.append(f"{'llama.cpp / ggml':<{width}}(in llama-cpp-python)  MIT")
    out += [f"{d.metadata['Name']:<{width}}{d.version:<22}{licence_of(d)}" for d in dists]
    out += ["", RULE, "llama.cpp and ggml (https://github.com/ggml-org/llama.cpp)", RULE, ""]
    out += [
        "llama-cpp-python compiles llama.cpp and ggml into the shared libraries libllama,",
        "libggml, libggml-base, libggml-cpu (and GPU backends) shipped in llama_cpp/lib.",
        "",
        LLAMA_CPP_LICENSE,
        RULE,
        "Qt 6 and PySide6 (LGPL-3.0)",
        RULE,
        "",
        QT_NOTE,
        LGPL3.read_text(encoding="utf-8").strip() + "\n" if LGPL3.is_file() else "",
        RULE,
        "Other bundled components",
        RULE,
        "",
        BUNDLED_NOTE,
    ]
    for dist in dists:
        meta = dist.metadata
        out += [RULE, f"{meta['Name']} {dist.version} — {licence_of(dist)}"]
        home = meta.get("Home-page") or next(
            (u.split(",", 1)[1].strip() for u in meta.get_all("Project-URL") or [] if "," in u), None
        )
        if home:
            out.append(home)
        out += [RULE, ""]
        texts = licence_texts(dist)
        if not texts:
            out += ["(The distribution ships no licence file; its licence is named above.)", ""]
        for name, text in texts:
            out += [f"--- {name} ---", "", text, ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    text = render()
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
