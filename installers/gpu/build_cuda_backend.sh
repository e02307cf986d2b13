#!/bin/sh
# LINUX + NVIDIA. llama.cpp's CUDA backend as an add-on to the CPU package, for machines with
# an NVIDIA GPU — nothing is rebuilt or downloaded where Enclave runs:
#   dist/enclave-cuda12_<version>_amd64.deb           (Depends: enclave (= <version>))
#   dist/Enclave-<version>-linux-x86_64-cuda12.tar.gz (extract over the portable folder)
# Both put libggml-cuda.so and the CUDA runtime it links to (libcudart, libcublas, libcublasLt)
# beside the CPU variants in .../_internal/llama_cpp/lib; Enclave's run-time backend loading
# picks it up at the next start (`enclave doctor` then lists it loaded, or why not: "no NVIDIA
# driver"). Users need only the NVIDIA driver (>= 525; libcuda.so.1 is never shipped).
#
#   installers/gpu/build_cuda_backend.sh [--dry-run]
#
# It builds from the same llama.cpp as the CPU package: the llama-cpp-python sdist pinned (with
# its sha256) in installers/requirements-lock.txt, so libggml-cuda.so matches the shipped
# libggml-base.so. NVIDIA's compiler and runtime come from NVIDIA's Python wheels (no toolkit
# install, no GPU needed to build): nvidia-cuda-nvcc-cu12, nvidia-cuda-runtime-cu12,
# nvidia-cublas-cu12, nvidia-cuda-cccl-cu12. CUDA_ARCHS picks the GPU generations (default
# Pascal … Hopper); fewer build faster. Expect well over an hour on 2 cores for all of them.
# --dry-run prints every command instead of running it (make package-test checks that).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY=1
run() { if [ -n "$DRY" ]; then echo "+ $*"; else "$@"; fi; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
LOCK=installers/requirements-lock.txt
LLAMA=$(sed -n "s/^llama[-_]cpp[-_]python==\([^ ]*\).*/\1/p" "$LOCK")
HASH=$(sed -n '/^llama[-_]cpp[-_]python==/,/--hash/ s/.*--hash=sha256:\([0-9a-f]*\).*/\1/p' "$LOCK" | head -n 1)
[ -n "$LLAMA" ] && [ -n "$HASH" ] || { echo "build_cuda_backend: llama-cpp-python is not pinned in $LOCK" >&2; exit 1; }
ARCHS=${CUDA_ARCHS:-61;70;75;80;86;89;90}
WORK=${ENCLAVE_CUDA_WORK:-$ROOT/build/cuda}
TOOLS="$WORK/venv"
OUT="$WORK/lib"
APP_LIB=_internal/llama_cpp/lib

# NVIDIA's compiler and runtime, from its wheels (pinned by version; the site's mirror serves them)
run python3 -m venv "$TOOLS"
run "$TOOLS/bin/pip" install --quiet "nvidia-cuda-nvcc-cu12==12.8.*" "nvidia-cuda-runtime-cu12==12.8.*" \
    "nvidia-cublas-cu12==12.8.*" "nvidia-cuda-cccl-cu12==12.8.*" cmake ninja
NV=$(echo "$TOOLS"/lib/python3*/site-packages/nvidia)

# The llama.cpp source the CPU package was built from, checked against the lock's sha256
REQ="llama-cpp-python==$LLAMA --hash=sha256:$HASH"
if [ -n "$DRY" ]; then echo "+ write $WORK/llama.req: $REQ"; else mkdir -p "$WORK"; echo "$REQ" > "$WORK/llama.req"; fi
run "$TOOLS/bin/pip" download --quiet --no-deps --no-binary :all: --require-hashes -r "$WORK/llama.req" -d "$WORK/src"
run tar xzf "$WORK/src/llama_cpp_python-$LLAMA.tar.gz" -C "$WORK/src"
SRC="$WORK/src/llama_cpp_python-$LLAMA/vendor/llama.cpp"

# Only the CUDA backend: a library loaded at run time beside the shipped libggml-base.so
run "$TOOLS/bin/cmake" -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_BACKEND_DL=ON -DGGML_CUDA=ON -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" \
    -DCMAKE_CUDA_COMPILER="$NV/cuda_nvcc/bin/nvcc" -DCUDAToolkit_ROOT="$NV/cuda_runtime" \
    -DCMAKE_BUILD_RPATH='$ORIGIN' -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF
run "$TOOLS/bin/cmake" --build "$WORK/build" --target ggml-cuda

# The library and the runtime it links to (never the driver's libcuda.so.1), side by side
run mkdir -p "$OUT"
run cp "$WORK/build/bin/libggml-cuda.so" "$OUT/"
for lib in cuda_runtime/lib/libcudart.so.12 cublas/lib/libcublas.so.12 cublas/lib/libcublasLt.so.12; do
    run cp -L "$NV/$lib" "$OUT/"
done

# The .deb: the files into the installed app's folder, for exactly this version of Enclave
DEB="$WORK/deb"
run mkdir -p "$DEB/DEBIAN" "$DEB/opt/enclave/$APP_LIB"
run cp "$OUT"/* "$DEB/opt/enclave/$APP_LIB/"
CONTROL="Package: enclave-cuda12
Version: $VERSION
Architecture: amd64
Depends: enclave (= $VERSION)
Maintainer: Enclave <enclave@localhost>
Description: NVIDIA CUDA 12 backend for Enclave
 llama.cpp's CUDA backend and the CUDA runtime it needs, loaded by Enclave at its next start
 where an NVIDIA driver (>= 525) is installed."
if [ -n "$DRY" ]; then echo "+ write $DEB/DEBIAN/control:"; echo "$CONTROL" | sed 's/^/    /'
else echo "$CONTROL" > "$DEB/DEBIAN/control"; fi
run dpkg-deb --root-owner-group --build "$DEB" "dist/enclave-cuda12_${VERSION}_amd64.deb"

# The tarball: extract in the folder holding the portable Enclave-<version>/
TAR="$WORK/tar/Enclave-$VERSION/lib/$APP_LIB"
run mkdir -p "$TAR"
run cp "$OUT"/* "$TAR/"
run tar czf "dist/Enclave-$VERSION-linux-x86_64-cuda12.tar.gz" -C "$WORK/tar" "Enclave-$VERSION"
echo "build_cuda_backend: dist/enclave-cuda12_${VERSION}_amd64.deb and dist/Enclave-$VERSION-linux-x86_64-cuda12.tar.gz${DRY:+ (dry run: nothing built)}"
