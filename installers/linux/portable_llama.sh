#!/bin/sh
# Rebuild llama-cpp-python in .venv for distribution: portable x86-64 code.
#
# pip builds llama.cpp with GGML_NATIVE=ON by default, i.e. for every instruction set of
# the build machine's CPU (AVX-512 on a recent server). A package built from that crashes
# with "Illegal instruction" on CPUs without them. This builds for x86-64-v3 instead
# (AVX2, FMA, F16C, BMI2: Intel Haswell 2013+, AMD Zen+). About 4 minutes on 2 cores.
#
#   installers/linux/portable_llama.sh && make package
#
# --no-cache-dir matters: pip's wheel cache does not know about CMAKE_ARGS and would hand
# back the native build. llama.cpp's RPC backend is in every build (enclave host, hosts). To
# return to the native (faster on this machine) build: rm .venv/.installed && make.
set -eu
cd "$(dirname "$0")/../.."
LLAMA=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))")
CMAKE_ARGS="-DGGML_RPC=on -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON ${CMAKE_ARGS:-}" \
    .venv/bin/python -m pip install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$LLAMA"
.venv/bin/python -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
