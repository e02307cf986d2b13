# WINDOWS ONLY. Builds dist\Enclave\ (PyInstaller) and dist\Enclave-<version>-windows-x64-setup.exe
# (Inno Setup). Run from any folder in PowerShell:
#
#   powershell -ExecutionPolicy Bypass -File installers\windows\build.ps1 [-Cuda]
#
# Needs: Python 3.10-3.12 (x64) as `py`, Visual Studio 2022 Build Tools with "Desktop
# development with C++" (llama-cpp-python compiles llama.cpp), Inno Setup 6 (iscc.exe).
# -Cuda: build llama.cpp with CUDA (CUDA Toolkit 12.x installed, nvcc on PATH); PyInstaller
# then collects cudart/cublas DLLs the CUDA backend links to.
param([switch]$Cuda)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

$py = ".venv\Scripts\python.exe"
if (-not (Test-Path $py)) { py -3 -m venv .venv }
& $py -m pip install --upgrade pip
# A portable CPU build: llama.cpp's default (GGML_NATIVE) would use every instruction of
# *this* CPU, and the installer would crash on older ones. AVX2/FMA/F16C = x86-64-v3.
$portable = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
$env:CMAKE_ARGS = if ($Cuda) { "$portable -DGGML_CUDA=on" } else { $portable }
& $py -m pip install -e ".[package]"
$llama = (& $py -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))").Trim()
& $py -m pip install --force-reinstall --no-deps --no-cache-dir "llama-cpp-python==$llama"
Remove-Item Env:\CMAKE_ARGS

# The bill of materials (CycloneDX; --no-lock: the lock's files are Linux's, so no hashes of the Python
# wheels, but each llama.cpp library with its sha256), THIRD_PARTY_LICENSES from it, and the SBOM
# beside the program as on Linux (enclave-cli doctor --json reports its sha256). With -Cuda the
# cudart/cublas DLLs PyInstaller collects are not listed in it.
$version = (Select-String -Path app\__init__.py -Pattern '__version__ = "(.+)"').Matches[0].Groups[1].Value
$sbom = "dist\enclave-$version-windows-x64-sbom.cdx.json"
& $py scripts\sbom.py --no-lock -o $sbom
if ($LASTEXITCODE -ne 0) { throw "scripts\sbom.py failed" }
& $py scripts\third_party_licenses.py --sbom $sbom
& .venv\Scripts\pyinstaller.exe --noconfirm --clean build.spec
Copy-Item $sbom dist\Enclave\sbom.cdx.json

# Smoke test of the frozen app.
& dist\Enclave\enclave-cli.exe --version
if ($LASTEXITCODE -ne 0) { throw "enclave-cli --version failed" }
& dist\Enclave\enclave-cli.exe doctor
if ($LASTEXITCODE -ne 0) { throw "enclave-cli doctor failed" }

$iscc = (Get-Command iscc.exe -ErrorAction SilentlyContinue).Source
if (-not $iscc) { $iscc = Join-Path ${env:ProgramFiles(x86)} "Inno Setup 6\ISCC.exe" }
& $iscc "/DAppVersion=$version" installers\windows\enclave.iss
if ($LASTEXITCODE -ne 0) { throw "iscc failed" }
Get-ChildItem dist\Enclave-*-setup.exe | Format-Table Name, Length
