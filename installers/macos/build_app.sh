#!/bin/sh
# MACOS ONLY. Builds dist/Enclave.app with PyInstaller (the BUNDLE section of build.spec:
# Info.plist, assets/enclave.icns) and signs it ad hoc, or with ENCLAVE_SIGN_ID
# ("Developer ID Application: …") for distribution (then notarize: see installers/README.md).
#
#   installers/macos/build_app.sh          then   installers/macos/make_dmg.sh
#
# Needs Xcode's command-line tools (xcode-select --install) and Python 3.10+ (python.org or
# Homebrew). On Apple Silicon llama.cpp is built with Metal (its default on macOS); the
# Metal shaders are embedded in libggml-metal (GGML_METAL_EMBED_LIBRARY, on by default).
# Build on the oldest macOS you support (LSMinimumSystemVersion in build.spec is 12.0).
set -eu
[ "$(uname -s)" = Darwin ] || { echo "build_app.sh: macOS only" >&2; exit 1; }
cd "$(dirname "$0")/../.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --upgrade pip
.venv/bin/python -m pip install -e '.[package]'
# No GGML_NATIVE on macOS: Apple Silicon builds target armv8.2 (+dotprod) by default, which
# every M-series chip has. For Intel Macs add -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON.
if ! .venv/bin/python -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)"; then
    llama=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
    CMAKE_ARGS="-DGGML_METAL=on" .venv/bin/python -m pip install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$llama"
fi

# The bill of materials (CycloneDX; --no-lock: the lock's files are Linux's, so no hashes of the Python
# wheels, but each llama.cpp library with its sha256) beside the .app, and THIRD_PARTY_LICENSES from it.
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
SBOM="dist/enclave-$VERSION-macos-$(uname -m)-sbom.cdx.json"
.venv/bin/python scripts/sbom.py --no-lock -o "$SBOM"
.venv/bin/python scripts/third_party_licenses.py --sbom "$SBOM"
.venv/bin/pyinstaller --noconfirm --clean build.spec

APP=dist/Enclave.app
"$APP/Contents/MacOS/Enclave" --version
"$APP/Contents/MacOS/Enclave" doctor | tee /dev/stderr | grep -q "Metal" || echo "warning: no Metal backend in this build" >&2

codesign --force --deep --timestamp --options runtime --sign "${ENCLAVE_SIGN_ID:--}" "$APP"
codesign --verify --strict --verbose=1 "$APP"
echo "built $APP ($(du -sh "$APP" | cut -f1))"
