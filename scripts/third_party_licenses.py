"""Write assets/THIRD_PARTY_LICENSES: every component the app ships, with its licence.

    .venv-package/bin/python scripts/third_party_licenses.py --sbom dist/enclave-<v>.cdx.json   (make package)
    .venv/bin/python scripts/third_party_licenses.py [-o assets/THIRD_PARTY_LICENSES]

The list of components is the bill of materials scripts/sbom.py writes (one source for both):
every shipped Python distribution with its version and the licence its metadata declares,
llama.cpp (the commit, vendored in llama-cpp-python's shared libraries), Qt, SQLCipher and
the Python interpreter. Without ``--sbom`` the SBOM is made in memory from this environment
(no lock needed: the other platforms' build scripts call it so). The text of every licence
file a distribution ships is read from the installed distribution; llama.cpp and Qt get notes
of their own. Run it in the environment the app is built from; the output is bundled.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from package_inputs import LockError

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
LGPL3 = ROOT / "installers" / "licenses" / "LGPL-3.0.txt"  # the licence text (from Debian's common-licenses)

BUNDLED_NOTE = """\
The frozen application also contains the Python interpreter (Python Software Foundation
License) and shared libraries copied from the build system (for example the C++ and
OpenMP runtimes, ICU, OpenSSL, libffi, X11/XCB and font libraries), each under its own
licence as published by its authors and by the distribution it was built on.
"""


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


def licence_named(component: dict[str, Any]) -> str:
    """The licence a CycloneDX component declares: its SPDX expression or licence name(s)."""
    names = []
    for entry in component.get("licenses", []):
        if "expression" in entry:
            names.append(entry["expression"])
        elif "license" in entry:
            names.append(entry["license"].get("id") or entry["license"].get("name") or "")
    return "; ".join(n for n in names if n) or "unknown (no licence metadata)"


def python_components(sbom: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/")]


def other_component(sbom: dict[str, Any], ref: str) -> dict[str, Any] | None:
    return next((c for c in sbom["components"] if c.get("bom-ref") == ref), None)


def installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def render(sbom: dict[str, Any]) -> str:
    """THIRD_PARTY_LICENSES for the components ``sbom`` lists (licence texts from this environment)."""
    version = sbom["metadata"]["component"]["version"]
    packages = python_components(sbom)
    llama = other_component(sbom, "llama.cpp")
    extras = [c for c in (other_component(sbom, ref) for ref in ("qt", "sqlcipher", "cpython")) if c]
    out = [
        f"Enclave {version} — third-party software",
        RULE,
        "",
        "Enclave itself is licensed under the Apache License 2.0. It ships the following",
        "third-party software, each under its own licence. This file is generated by",
        "scripts/third_party_licenses.py from the package's bill of materials (scripts/sbom.py).",
        "",
        "Summary",
        "-------",
    ]
    width = max(len(c["name"]) for c in [*packages, *extras, {"name": "llama.cpp / ggml"}]) + 2
    llama_version = llama["version"][:12] if llama else "(in llama-cpp-python)"
    out.append(f"{'llama.cpp / ggml':<{width}}{llama_version:<22}MIT")
    out += [f"{c['name']:<{width}}{c['version']:<22}{licence_named(c)}" for c in [*extras, *packages]]
    out += ["", RULE, "llama.cpp and ggml (https://github.com/ggml-org/llama.cpp)", RULE, ""]
    if llama:
        out += [f"Commit {llama['version']}.", ""]
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
    for component in packages:
        out += [RULE, f"{component['name']} {component['version']} — {licence_named(component)}"]
        home = next((r["url"] for r in component.get("externalReferences", []) if r.get("type") == "website"), None)
        if home:
            out.append(home)
        out += [RULE, ""]
        dist = installed(component["name"])
        texts = licence_texts(dist) if dist is not None else []
        if not texts:
            out += ["(The distribution ships no licence file; its licence is named above.)", ""]
        for name, text in texts:
            out += [f"--- {name} ---", "", text, ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--sbom", type=Path, help="the CycloneDX JSON scripts/sbom.py wrote (default: made now)")
    args = parser.parse_args()
    if args.sbom is not None:
        sbom = json.loads(args.sbom.read_text(encoding="utf-8"))
    else:
        from sbom import build

        try:
            sbom = build(lock=None)
        except LockError as exc:  # pragma: no cover - only raised with a lock
            print(f"third_party_licenses: {exc}", file=sys.stderr)
            return 1
    text = render(sbom)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
