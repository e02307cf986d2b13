# Two commands do all set-up on a fresh machine:
#   make run    installs into .venv and starts Enclave
#   make test   installs into .venv (with the dev tools) and runs every check and test
# CMAKE_ARGS is passed through to the llama-cpp-python build (see README: GPU builds).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean package package-test portable-cmake-args

# llama.cpp is built with its RPC backend (enclave host, enclave hosts) in every build, beside
# any GPU backend CMAKE_ARGS names. pip's wheel cache ignores CMAKE_ARGS, so the wheel is built
# once per version and arguments into a cache of Enclave's own (about 6 minutes on 2 cores).
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_RPC=on $(CMAKE_ARGS)
WHEEL_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/enclave/wheels/$(shell printf '%s' '$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-16)

# The shipped distributions are installed at the versions of the package's lock file (its pins as
# constraints, without the hashes: the dev tools are not in it), so the tests run what ships.
LOCK := installers/requirements-lock.txt
# What make package builds with and does not ship (pip, setuptools, scikit-build-core, CMake, ninja, PyInstaller,
# the package and dev extras), pinned and hashed the same way; written by make lock with the lock above.
TOOLS_LOCK := installers/build-tools-lock.txt

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir \
		"llama-cpp-python==$(LLAMA_VERSION)" -w $(WHEEL_CACHE)
	$(BIN)/python -m pip install --quiet $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/enclave

# deptry: every third-party import declared in pyproject.toml, no declared dependency unused.
# The app's code may use only the main dependencies; tests, benchmarks and scripts also the
# dev and package extras (so there DEP004, "dev dependency imported", is fine, and DEP002,
# "declared but unused", is the first run's business).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/deptry app inference ui
	$(BIN)/deptry tests bench scripts --exclude '\.venv' --ignore DEP002,DEP004

test: lint
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

# The proofs of the README's Security section, each printing its figures. `make test` runs a
# small version of each; these run them in full (minutes). Linux only.
#   make airgap-test                        the whole app, GUI included, in a network namespace with no
#                                           interfaces and an audit hook in every process (needs root or
#                                           unprivileged user namespaces; exit 3 says why not)
#   make kill-test KILLS=50 [SEED=n]        SIGKILL mid-reply, mid-ingest, mid-download, and of the worker
#   make soak-test REPLIES=1000 CYCLES=100  GUI memory, file handles and child processes over a long session
#   make fuzz FUZZ_EXAMPLES=2000            GGUF files (bytes and fields), every rich document format, and
#                                           accepted GGUF files loaded by llama.cpp
#   make proofs                             all four
KILLS ?= 50
REPLIES ?= 1000
CYCLES ?= 100
FUZZ_EXAMPLES ?= 2000
.PHONY: airgap-test kill-test soak-test fuzz proofs

airgap-test: $(STAMP)
	$(BIN)/python -m tests.airgap_check

kill-test: $(STAMP)
	$(BIN)/python -m tests.proofs.kills --kills $(KILLS) $(if $(SEED),--seed $(SEED))

soak-test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m tests.proofs.soak --replies $(REPLIES) --cycles $(CYCLES)

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -p no:cacheprovider \
		tests/test_fuzz_gguf.py tests/test_fuzz_documents.py tests/test_gguf_info.py::test_damage_never_escapes_as_anything_but_gguf_error

proofs: airgap-test kill-test soak-test fuzz

bench: $(STAMP)
	$(BIN)/python -m tests.tiny_models $(VENV)/bench-moe.gguf --kind bench
	$(BIN)/python bench/engine_overhead.py $(VENV)/bench-moe.gguf
	$(BIN)/python bench/planner.py
	$(BIN)/python bench/device_speed.py --loopback
	$(BIN)/python bench/plan_speed.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/encryption.py
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/ui.py
	$(BIN)/python bench/library.py

# Distribution (installers/README.md). Not part of `make test`: several minutes.
#   make package       dist/Enclave/ (PyInstaller), the .deb, the portable .tar.gz, the SBOM and SHA256SUMS
#   make package-test  smoke test of all three in a clean environment
#   make lock          rewrite installers/requirements-lock.txt (the exact inputs make package installs and
#                      ships), installers/build-tools-lock.txt (what it builds with) and installers/gpu/cuda13-lock.txt
# Packages are built in their own .venv-package from the lock file: every shipped Python distribution at
# one version, checked against its sha256 (pip --require-hashes). llama.cpp is compiled for every x86-64
# CPU: its backends are libraries loaded at run time (GGML_BACKEND_DL), the CPU one in a variant per
# instruction-set level (GGML_CPU_ALL_VARIANTS: x64, sse42, sandybridge, … haswell, skylakex, … zen4,
# sapphirerapids), of which llama.cpp loads the best for the machine (pip's default build targets this
# machine's CPU, and would crash elsewhere with "Illegal instruction"). CMAKE_INSTALL_BINDIR puts those
# libraries beside libllama in llama_cpp/lib (ggml would install them in site-packages/bin, where nothing
# looks). About 28 minutes on 2 shared cores (measured). --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS.
PKG_VENV := .venv-package
PKG_BIN := $(PKG_VENV)/bin
PORTABLE_CMAKE_ARGS := -DGGML_RPC=on -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DCMAKE_INSTALL_BINDIR=llama_cpp/lib
portable-cmake-args:  # for installers/linux/portable_llama.sh: one list of the package's build arguments
	@echo '$(PORTABLE_CMAKE_ARGS)'
PACKAGE_CMAKE_ARGS := $(strip $(PORTABLE_CMAKE_ARGS) $(CMAKE_ARGS))
# one stamp per set of arguments: other arguments rebuild llama-cpp-python (pip alone would keep the
# installed build of the same version)
PACKAGE_STAMP := $(PKG_VENV)/.installed-$(shell printf '%s' '$(PACKAGE_CMAKE_ARGS)' | sha256sum | cut -c1-16)
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
SBOM := dist/enclave-$(VERSION)-sbom.cdx.json
.PHONY: lock

# The lock pins what .venv (where the tests pass) has installed; `scripts/lock_package.py --upgrade`
# takes the newest versions pyproject.toml allows instead.
lock: $(STAMP)
	$(BIN)/python scripts/lock_package.py --cmake-args "$(PORTABLE_CMAKE_ARGS)" -o $(LOCK)

# Everything pip installs here is pinned and hashed. The build tools (not shipped: pip, setuptools,
# scikit-build-core, CMake, ninja, PyInstaller, the dev extra for the smoke test) come first, from their lock;
# then the shipped distributions, llama-cpp-python last and compiled with --no-build-isolation (so with the
# scikit-build-core, CMake and ninja just installed, and the shipped `packaging` scikit-build-core needs,
# not whatever pip or the machine would take); then
# enclave itself (setuptools from the tool lock). pip check: the two locks together leave no requirement
# unmet; lock_package.py --check: the environment ships exactly the lock's versions.
$(PACKAGE_STAMP): pyproject.toml $(LOCK) $(TOOLS_LOCK)
	test -x $(PKG_BIN)/python || $(PYTHON) -m venv $(PKG_VENV)
	$(PKG_BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(TOOLS_LOCK)
	test "$$(cat $(PKG_VENV)/.llama-cmake-args 2>/dev/null)" = "$(PACKAGE_CMAKE_ARGS)" || \
		$(PKG_BIN)/python -m pip uninstall --quiet --yes llama-cpp-python
	awk '/^[^ #]/ {llama = /^llama[-_]cpp[-_]python==/} !llama' $(LOCK) > $(PKG_VENV)/lock-but-llama.txt
	awk '/^[^ #]/ {llama = /^llama[-_]cpp[-_]python==/} llama' $(LOCK) > $(PKG_VENV)/lock-llama.txt
	$(PKG_BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(PKG_VENV)/lock-but-llama.txt
	CMAKE_ARGS="$(PACKAGE_CMAKE_ARGS)" $(PKG_BIN)/python -m pip install --quiet --no-cache-dir \
		--no-build-isolation --require-hashes --no-deps -r $(PKG_VENV)/lock-llama.txt
	$(PKG_BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PKG_BIN)/python -m pip check
	$(PKG_BIN)/python scripts/lock_package.py --check -o $(LOCK)
	printf '%s' "$(PACKAGE_CMAKE_ARGS)" > $(PKG_VENV)/.llama-cmake-args
	touch $(PACKAGE_STAMP)

# The SBOM is made first (it fails if .venv-package is not the lock's), THIRD_PARTY_LICENSES from it, and
# it ships beside the program (dist/Enclave/sbom.cdx.json: `Enclave doctor --json` gives its sha256).
package: $(PACKAGE_STAMP)
	$(PKG_BIN)/python scripts/sbom.py --lock $(LOCK) --cmake-args "$(PACKAGE_CMAKE_ARGS)" -o $(SBOM)
	$(PKG_BIN)/python scripts/third_party_licenses.py --sbom $(SBOM)
	$(PKG_BIN)/pyinstaller --noconfirm --clean --log-level WARN build.spec
	cp $(SBOM) dist/Enclave/sbom.cdx.json
	installers/linux/build_deb.sh
	installers/linux/build_tarball.sh
	cd dist && sha256sum $(notdir $(SBOM)) enclave_$(VERSION)_*.deb Enclave-$(VERSION)-linux-*.tar.gz > SHA256SUMS

package-test: $(PACKAGE_STAMP)
	ENCLAVE_PYTHON=$(PKG_BIN)/python installers/linux/smoke_test.sh

clean:
	rm -rf $(VENV) $(PKG_VENV) build dist *.egg-info .pytest_cache .ruff_cache
