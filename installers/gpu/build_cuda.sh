#!/bin/sh
# LINUX + NVIDIA. The whole app built with CUDA 12 (not an add-on: it replaces the enclave package):
#   dist/enclave-full-cuda12_<version>_amd64.deb  and  dist/Enclave-<version>-linux-x86_64-full-cuda12.tar.gz
#   dist/enclave-full-cuda12-<version>-sbom.cdx.json  (shipped as sbom.cdx.json, with sbom-cuda12.cdx.json
#   for the CUDA runtime copied in)
# "full" tells it from the CUDA 12 add-on (enclave-cuda12, installers/gpu/build_cuda_backend.sh with
# CUDA_TOOLKIT=), which goes beside the CPU package instead.
#
#   installers/gpu/build_cuda.sh
#
# Needs the CUDA Toolkit 12.x (nvcc on PATH; 12.4 or newer recommended, 11.7+ builds but is
# not what we ship) and a C/C++ compiler. The users need only the NVIDIA driver (>= 525 for
# CUDA 12; libcuda.so.1 comes from the driver and is never bundled): the CUDA runtime
# libraries llama.cpp's CUDA backend links to (libcudart, libcublas, libcublasLt) are
# copied into the package, next to libggml-cuda.so. They are large (~700 MB for cuBLAS).
#
# CUDA_ARCHS picks the GPU generations compiled for (CMAKE_CUDA_ARCHITECTURES), default
# "61;70;75;80;86;89;90" (Pascal … Hopper); fewer means a faster build and a smaller package.
#
# The build tools come from installers/build-tools-lock.txt (sha256-pinned, as make package installs
# them) and llama-cpp-python is compiled with --no-build-isolation, so with the pinned
# scikit-build-core, CMake and ninja.
# This replaces llama-cpp-python in .venv with the CUDA build; to go back to the CPU build:
#   .venv/bin/pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==<version>
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY=.venv/bin/python

command -v nvcc >/dev/null || { echo "build_cuda: nvcc not found; install the CUDA Toolkit 12.x and put its bin/ on PATH" >&2; exit 1; }
CUDA=$(nvcc --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9]*\).*/\1/p')
case "$CUDA" in
    12.*) ;;
    11.*) echo "build_cuda: warning: CUDA $CUDA; the packages are meant for CUDA 12.x" >&2 ;;
    *) echo "build_cuda: CUDA $CUDA is not supported (need 12.x)" >&2; exit 1 ;;
esac

[ -x "$PY" ] || { echo "build_cuda: run make package once first (it creates .venv)" >&2; exit 1; }
"$PY" -m pip install --quiet --require-hashes --no-deps -r installers/build-tools-lock.txt
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
VARIANT=full-cuda12
SBOM="dist/enclave-$VARIANT-$VERSION-sbom.cdx.json"
LLAMA=$("$PY" -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
# Built as make package builds (backends loaded at run time, every CPU variant), plus CUDA.
# (For the CPU package plus a CUDA add-on instead: installers/gpu/build_cuda_backend.sh.)
LLAMA_ARGS="$(make -s portable-cmake-args) -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS:-61;70;75;80;86;89;90}"
CMAKE_ARGS="$LLAMA_ARGS" "$PY" -m pip install --force-reinstall --no-deps --no-cache-dir --no-build-isolation \
    "llama-cpp-python==$LLAMA"

LIB=$("$PY" -c "import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / 'lib')")
[ -f "$LIB/libggml-cuda.so" ] || { echo "build_cuda: $LIB/libggml-cuda.so is missing: the CUDA build failed" >&2; exit 1; }

# The bill of materials (every Python distribution with the lock's sha256: .venv must be the lock's),
# THIRD_PARTY_LICENSES from it
"$PY" scripts/sbom.py --cmake-args "$LLAMA_ARGS" -o "$SBOM"
"$PY" scripts/third_party_licenses.py --sbom "$SBOM"
.venv/bin/pyinstaller --noconfirm --clean --log-level WARN build.spec
cp "$SBOM" dist/Enclave/sbom.cdx.json

# The CUDA runtime next to libggml-cuda.so (its RUNPATH is $ORIGIN), whether or not
# PyInstaller already collected it; never the driver's libcuda.so.1.
DEST=dist/Enclave/_internal/llama_cpp/lib
for soname in libcudart.so.12 libcublas.so.12 libcublasLt.so.12; do
    path=$(ldd "$LIB/libggml-cuda.so" | awk -v n="$soname" '$1 == n { print $3 }')
    [ -n "$path" ] && [ -f "$path" ] || { echo "build_cuda: $soname not found by ldd $LIB/libggml-cuda.so" >&2; exit 1; }
    rm -f "dist/Enclave/_internal/$soname"
    cp -L "$path" "$DEST/$soname"
done
rm -f dist/Enclave/_internal/libcuda.so* "$DEST"/libcuda.so*
# The CUDA runtime just copied in, listed with its sha256 under the toolkit it came from (the main SBOM
# lists libggml-cuda.so with the other llama.cpp libraries)
RUNTIME_DIR=$(mktemp -d)
cp "$DEST/libggml-cuda.so" "$DEST"/libcu*.so.12 "$RUNTIME_DIR/"
"$PY" scripts/sbom_gpu.py --name enclave-$VARIANT --release "$CUDA" --lib-dir "$RUNTIME_DIR" \
    --toolkit "$(dirname "$(dirname "$(command -v nvcc)")")" --cmake-args "$LLAMA_ARGS" -o dist/Enclave/sbom-cuda12.cdx.json
rm -rf "$RUNTIME_DIR"

# A CUDA build must at least start and list the CUDA backend (on a machine with a GPU).
env -i PATH=/usr/bin:/bin HOME="$(mktemp -d)" dist/Enclave/Enclave doctor | tee /dev/stderr | grep -q "CUDA" \
    || echo "build_cuda: warning: doctor lists no CUDA backend (no GPU or driver on this machine?)" >&2

ENCLAVE_VARIANT=$VARIANT installers/linux/build_deb.sh
ENCLAVE_VARIANT=$VARIANT installers/linux/build_tarball.sh
