#!/bin/sh
# LINUX + NVIDIA. llama.cpp's CUDA backend as an add-on to the CPU package, for machines with
# an NVIDIA GPU — nothing is rebuilt or downloaded where Enclave runs:
#   dist/enclave-cuda13_<version>_amd64.deb           (Depends: enclave (= <version>))
#   dist/Enclave-<version>-linux-x86_64-cuda13.tar.gz (extract over the portable folder)
#   dist/enclave-cuda13-<version>-sbom.cdx.json       (what they ship, CycloneDX: scripts/sbom_gpu.py)
# Both put libggml-cuda.so and the CUDA runtime it links to (libcudart, libcublas, libcublasLt)
# beside the CPU variants in .../_internal/llama_cpp/lib, and their bill of materials beside the
# program (sbom-cuda13.cdx.json, next to the app's sbom.cdx.json); Enclave's run-time backend loading
# picks it up at the next start (`enclave doctor` then lists it loaded, or why not: "no NVIDIA
# driver"). Users need only the NVIDIA driver (CUDA 13: >= 580, GPUs from Turing, sm_75, on;
# libcuda.so.1 is the driver's and never shipped).
#
#   installers/gpu/build_cuda_backend.sh [--dry-run]
#
# It builds from the same llama.cpp as the CPU package: the llama-cpp-python sdist pinned (with
# its sha256) in installers/requirements-lock.txt, so libggml-cuda.so matches the shipped
# libggml-base.so. NVIDIA's compiler and runtime come from NVIDIA's CUDA 13.0 Python wheels (no
# toolkit install, no GPU needed to build): nvidia-cuda-nvcc, -crt, nvidia-nvvm, -cuda-cccl,
# -cuda-runtime, nvidia-cublas, pinned with their sha256 in installers/gpu/cuda13-lock.txt with
# CMake and ninja (make lock writes it; pip install --require-hashes). They unpack into one nvidia/cu13 folder that lacks a few things
# a toolkit has (targets/x86_64-linux, lib64, the unversioned .so links, the linker stub of the
# driver's libcuda.so); those are added there, inside the build's own venv. (CUDA 12's wheels
# carry no nvcc, so CUDA 12 needs an installed toolkit.)
#
#   CUDA_TOOLKIT=/usr/local/cuda-12.8   an installed toolkit instead of the wheels (for drivers
#                                       older than 580 or pre-Turing GPUs: CUDA 12, driver >= 525);
#                                       the package is then named after its nvcc's major version
#   CUDA_ARCHS="75-real;86-real"         the GPU generations (CMAKE_CUDA_ARCHITECTURES); the
#                                       default covers every x86 GPU generation the toolkit
#                                       supports, with PTX for newer ones. Fewer build faster.
#   ENCLAVE_CUDA_WORK=/tmp/cuda         the work folder (default build/cuda)
#   JOBS=2                              parallel compiler jobs (default: the number of CPUs)
#
# A build for every architecture takes hours on 2 cores (installers/README.md has timings).
# --dry-run prints every command instead of running it (make package-test checks that).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY=1
run() { if [ -n "$DRY" ]; then echo "+ $*"; else "$@"; fi; }
die() { echo "build_cuda_backend: $*" >&2; exit 1; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
LOCK=installers/requirements-lock.txt
LLAMA=$(sed -n "s/^llama[-_]cpp[-_]python==\([^ ]*\).*/\1/p" "$LOCK")
HASH=$(sed -n '/^llama[-_]cpp[-_]python==/,/--hash/ s/.*--hash=sha256:\([0-9a-f]*\).*/\1/p' "$LOCK" | head -n 1)
[ -n "$LLAMA" ] && [ -n "$HASH" ] || die "llama-cpp-python is not pinned in $LOCK"
WORK=${ENCLAVE_CUDA_WORK:-$ROOT/build/cuda}
case "$WORK" in /*) ;; *) WORK="$ROOT/$WORK" ;; esac
TOOLS="$WORK/venv"
OUT="$WORK/lib"
APP_LIB=_internal/llama_cpp/lib
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# cmake and ninja (whatever the build machine has installed may be too old for CUDA 13), packaging
# (for scripts/sbom_gpu.py) and NVIDIA's wheels: every file pinned by its sha256 in the CUDA lock.
# With CUDA_TOOLKIT only the first three (the lock without its nvidia-* pins).
CUDA_LOCK=installers/gpu/cuda13-lock.txt
TOOLS_LOCK="$WORK/tools-lock.txt"
if [ -n "${CUDA_TOOLKIT:-}" ]; then
    FILTER='/^[A-Za-z0-9]/ { keep = ($0 !~ /^nvidia-/) } keep'
else
    FILTER='/^[A-Za-z0-9]/ { keep = 1 } keep'
fi
if [ -n "$DRY" ]; then echo "+ write $TOOLS_LOCK: $(awk "$FILTER" "$CUDA_LOCK" | sed -n 's/ \\$//p' | tr '\n' ' ')"
else mkdir -p "$WORK"; awk "$FILTER" "$CUDA_LOCK" > "$TOOLS_LOCK"; fi
run python3 -m venv "$TOOLS"
run "$TOOLS/bin/pip" install --quiet --require-hashes --no-deps -r "$TOOLS_LOCK"

# NVIDIA's compiler and runtime: an installed toolkit, or NVIDIA's CUDA 13.0 wheels
if [ -n "${CUDA_TOOLKIT:-}" ]; then
    CUDA=$CUDA_TOOLKIT
    [ -x "$CUDA/bin/nvcc" ] || die "CUDA_TOOLKIT=$CUDA has no bin/nvcc"
    RELEASE=$("$CUDA/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    RUNTIME=""
    for dir in "$CUDA/targets/x86_64-linux/lib" "$CUDA/lib64" "$CUDA/lib"; do
        [ -z "$RUNTIME" ] && [ -e "$dir/libcudart.so" ] && RUNTIME=$dir
    done
    [ -n "$RUNTIME" ] || die "CUDA_TOOLKIT=$CUDA: no libcudart.so in its targets/x86_64-linux/lib, lib64 or lib"
else
    # One release for all of them (the lock's): PTX from a newer nvcc would not load on an older 13.x driver.
    RELEASE=$(sed -n 's/^# build-input: cuda.release = //p' "$CUDA_LOCK")
    [ -n "$RELEASE" ] || die "$CUDA_LOCK names no cuda.release: run make lock"
    CUDA=$(echo "$TOOLS"/lib/python3*/site-packages/nvidia/cu13)
    RUNTIME="$CUDA/lib"
    # The layout nvcc (nvcc.profile: targets/x86_64-linux/include) and FindCUDAToolkit (lib64,
    # libcudart.so) expect of a toolkit
    run mkdir -p "$CUDA/targets/x86_64-linux" "$CUDA/lib/stubs"
    run ln -sfn ../../include "$CUDA/targets/x86_64-linux/include"
    run ln -sfn ../../lib "$CUDA/targets/x86_64-linux/lib"
    run ln -sfn lib "$CUDA/lib64"
    for name in cudart cublas cublasLt nvrtc; do
        run ln -sf "lib$name.so.13" "$CUDA/lib/lib$name.so"
    done
    # llama.cpp links the driver API (for its VMM memory pool). The toolkit's lib/stubs/libcuda.so
    # is not in any wheel: the same kind of linker stub, made from cuda.h — every driver function,
    # empty, under the driver's soname libcuda.so.1. Only linked against, never shipped.
    STUB_SRC="$WORK/libcuda-stub.c"
    if [ -n "$DRY" ]; then
        echo "+ write $STUB_SRC: an empty function for every CUresult cu*() in $CUDA/include/cuda.h"
    else
        cc -E -P -I"$CUDA/include" "$CUDA/include/cuda.h" | grep -oE 'CUresult +cu[A-Za-z0-9_]+ *\(' \
            | sed 's/CUresult *\(cu[A-Za-z0-9_]*\).*/void \1(void) {}/' | sort -u > "$STUB_SRC"
        [ -s "$STUB_SRC" ] || die "no driver functions found in $CUDA/include/cuda.h"
    fi
    run cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$STUB_SRC"
fi
MAJOR=${RELEASE%%.*}
MINOR=${RELEASE#*.}
case "$MAJOR" in
    13) DRIVER=580 GPUS="the Turing generation (sm_75) or newer"
        DEFAULT_ARCHS="75-real;80-real;86-real;89-real;90-real;100-real;120-real;90-virtual" ;;
    12) DRIVER=525 GPUS="the Pascal generation (sm_61) or newer"
        DEFAULT_ARCHS="61-real;70-real;75-real;80-real;86-real;89-real;90-real;90-virtual"
        [ "$MINOR" -ge 8 ] && DEFAULT_ARCHS="$DEFAULT_ARCHS;120-real" ;;
    *) die "CUDA $RELEASE is not supported (CUDA 13, or 12 through CUDA_TOOLKIT)" ;;
esac
ARCHS=${CUDA_ARCHS:-$DEFAULT_ARCHS}
NAME="enclave-cuda$MAJOR"
DEB_FILE="dist/${NAME}_${VERSION}_amd64.deb"
TAR_FILE="dist/Enclave-$VERSION-linux-x86_64-cuda$MAJOR.tar.gz"
SBOM_FILE="dist/$NAME-$VERSION-sbom.cdx.json"
SBOM_NAME="sbom-cuda$MAJOR.cdx.json"  # beside the program and its sbom.cdx.json
CUDA_FLAGS="-DGGML_BACKEND_DL=ON -DGGML_CUDA=ON -DGGML_NATIVE=OFF"

# The llama.cpp source the CPU package was built from, checked against the lock's sha256
REQ="llama-cpp-python==$LLAMA --hash=sha256:$HASH"
if [ -n "$DRY" ]; then echo "+ write $WORK/llama.req: $REQ"; else mkdir -p "$WORK"; echo "$REQ" > "$WORK/llama.req"; fi
run "$TOOLS/bin/pip" download --quiet --no-deps --no-binary :all: --require-hashes -r "$WORK/llama.req" -d "$WORK/src"
run tar xzf "$WORK/src/llama_cpp_python-$LLAMA.tar.gz" -C "$WORK/src"
SRC="$WORK/src/llama_cpp_python-$LLAMA/vendor/llama.cpp"

# Only the CUDA backend: a library loaded at run time beside the shipped libggml-base.so, with
# llama.cpp's own defaults for everything else (as its release builds). RUNPATH is $ORIGIN alone:
# the runtime libraries are found beside it, never in this build's folders.
# shellcheck disable=SC2086
run "$TOOLS/bin/cmake" -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    $CUDA_FLAGS -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" \
    -DCMAKE_CUDA_COMPILER="$CUDA/bin/nvcc" -DCUDAToolkit_ROOT="$CUDA" \
    -DCMAKE_MAKE_PROGRAM="$TOOLS/bin/ninja" -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
run "$TOOLS/bin/cmake" --build "$WORK/build" --target ggml-cuda -j "$JOBS"

# The library and the runtime it links to (never the driver's libcuda.so.1), side by side
run rm -rf "$OUT"
run mkdir -p "$OUT"
run cp "$WORK/build/bin/libggml-cuda.so" "$OUT/"
for lib in "libcudart.so.$MAJOR" "libcublas.so.$MAJOR" "libcublasLt.so.$MAJOR"; do
    run cp -L "$RUNTIME/$lib" "$OUT/"
done

# The bill of materials: each of those files with its sha256, under the llama.cpp commit it was
# built from or the NVIDIA wheel (version and sha256 from the CUDA lock) or toolkit it came from.
if [ -n "${CUDA_TOOLKIT:-}" ]; then ORIGIN_ARG="--toolkit $CUDA"; else ORIGIN_ARG="--cuda-lock $CUDA_LOCK"; fi
# shellcheck disable=SC2086
run "$TOOLS/bin/python" scripts/sbom_gpu.py --name "$NAME" --release "$RELEASE" --lib-dir "$OUT" $ORIGIN_ARG \
    --cmake-args "$CUDA_FLAGS -DCMAKE_CUDA_ARCHITECTURES=$ARCHS" -o "$SBOM_FILE"

# The .deb: the files into the installed app's folder, for exactly this version of Enclave; one
# CUDA add-on at a time (they share file names)
DEB="$WORK/deb"
run rm -rf "$DEB"
run mkdir -p "$DEB/DEBIAN" "$DEB/opt/enclave/$APP_LIB"
run cp "$OUT"/libggml-cuda.so "$OUT"/libcu* "$DEB/opt/enclave/$APP_LIB/"
run cp "$SBOM_FILE" "$DEB/opt/enclave/$SBOM_NAME"
CONTROL="Package: $NAME
Version: $VERSION
Architecture: amd64
Depends: enclave (= $VERSION)
Provides: enclave-cuda
Conflicts: enclave-cuda
Replaces: enclave-cuda
Maintainer: Enclave <enclave@localhost>
Description: NVIDIA CUDA $MAJOR backend for Enclave
 llama.cpp's CUDA backend and the CUDA $RELEASE runtime it needs (cuBLAS), loaded by Enclave at
 its next start. Needs the NVIDIA driver $DRIVER or newer and a GPU of $GPUS."
if [ -n "$DRY" ]; then echo "+ write $DEB/DEBIAN/control:"; echo "$CONTROL" | sed 's/^/    /'
else echo "$CONTROL" > "$DEB/DEBIAN/control"; fi
run mkdir -p dist
run dpkg-deb --root-owner-group -Zxz --build "$DEB" "$DEB_FILE"

# The tarball: extract in the folder holding the portable Enclave-<version>/
TAR="$WORK/tar/Enclave-$VERSION/lib/$APP_LIB"
run rm -rf "$WORK/tar"
run mkdir -p "$TAR"
run cp "$OUT"/libggml-cuda.so "$OUT"/libcu* "$TAR/"
run cp "$SBOM_FILE" "$WORK/tar/Enclave-$VERSION/lib/$SBOM_NAME"
run tar czf "$TAR_FILE" -C "$WORK/tar" "Enclave-$VERSION"
echo "build_cuda_backend: $DEB_FILE, $TAR_FILE and $SBOM_FILE (CUDA $RELEASE, driver >= $DRIVER, CUDA_ARCHS=$ARCHS)${DRY:+ (dry run: nothing built)}"
