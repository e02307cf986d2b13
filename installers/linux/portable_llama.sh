#!/bin/sh
# Rebuild llama-cpp-python in .venv for distribution: portable x86-64 code.
#
# pip builds llama.cpp with GGML_NATIVE=ON by default, i.e. for every instruction set of
# the build machine's CPU (AVX-512 on a recent server). A package built from that crashes
# with "Illegal instruction" on CPUs without them. This builds it as `make package` does:
# its backends as libraries loaded at run time and every x86-64 CPU variant (llama.cpp picks
# the best one where it runs), with the RPC backend. About 28 minutes on 2 cores.
#
#   installers/linux/portable_llama.sh && make package
#
# --no-cache-dir matters: pip's wheel cache does not know about CMAKE_ARGS and would hand
# back the native build. To return to the native (faster to build) one: rm .venv/.installed && make.
set -eu
cd "$(dirname "$0")/../.."
LLAMA=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
CMAKE_ARGS="$(make -s portable-cmake-args) ${CMAKE_ARGS:-}" \
    .venv/bin/python -m pip install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$LLAMA"
.venv/bin/enclave doctor | sed -n '/Backend libraries/,/^$/p'  # the CPU variant chosen here, and the others
