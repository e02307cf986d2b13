#!/bin/sh
# Smoke test of the Linux packages: dist/Enclave/ (PyInstaller), the .deb and the tarball.
#
#   installers/linux/smoke_test.sh        (or: make package-test, after make package)
#
# Every frozen program runs in a clean environment (env -i PATH=/usr/bin:/bin HOME=<tmp>,
# ENCLAVE_HOME=<tmp>), so no Python, venv or site-packages from this machine is used. The
# only thing taken from the source tree is the tiny test model, written by tests/tiny_models.py.
# Prints the timings installers/README.md quotes. Exit status: the number of failed checks.
set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIST=${ENCLAVE_DIST:-$ROOT/dist}  # ENCLAVE_DIST: another PyInstaller output folder
APP="$DIST/Enclave/Enclave"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/app/__init__.py")
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
DEB="$DIST/enclave_${VERSION}_${ARCH}.deb"
TARBALL="$DIST/Enclave-$VERSION-linux-$(uname -m).tar.gz"
PY="${ENCLAVE_PYTHON:-$ROOT/.venv/bin/python}"

TMP=$(mktemp -d)
FAILED=0
LEFT=""
cleanup() {
    for pid in $LEFT; do kill -KILL "$pid" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/home"

ok() { echo "  ok    $*"; }
bad() { echo "  FAIL  $*"; FAILED=$((FAILED + 1)); }
skip() { echo "  skip  $*"; }
now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }
# A clean environment: no PATH into a venv, no PYTHON*, a throwaway HOME and ENCLAVE_HOME.
clean() { env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 ENCLAVE_HOME="$TMP/enclave" "$@"; }

echo "Enclave $VERSION: smoke test of $DIST"
[ -x "$APP" ] || { echo "no $APP: run make package first" >&2; exit 1; }

# ---------------------------------------------------------------- the frozen folder
echo "dist/Enclave ($(du -sh "$DIST/Enclave" | cut -f1))"

cold=""
if sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then cold="cold (page cache dropped)"; fi
t0=$(now); out=$(clean "$APP" --version 2>&1); rc=$?; t1=$(now)
first=$(ms "$t0" "$t1")
if [ $rc -eq 0 ] && [ "$out" = "enclave $VERSION" ]; then ok "--version prints '$out'"; else bad "--version: rc=$rc '$out'"; fi
best=""
for _ in 1 2 3 4 5; do
    t0=$(now); clean "$APP" --version >/dev/null 2>&1; t1=$(now)
    t=$(ms "$t0" "$t1"); if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
done
echo "  time  --version: first run ${first} ms ${cold:+[$cold]}, warm ${best} ms (best of 5)"

out=$(clean "$APP" doctor 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "llama.cpp backends: .*CPU"; then
    ok "doctor: $(echo "$out" | grep 'llama.cpp backends')"
else
    bad "doctor: rc=$rc"; echo "$out" | sed 's/^/        /'
fi

out=$(clean "$APP" models catalog 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q "enclave models pull"; then ok "models catalog (bundled assets/catalog.json)"; else bad "models catalog: rc=$rc $out"; fi
CPU_LIB="$DIST/Enclave/_internal/llama_cpp/lib/libggml-cpu.so"
if command -v objdump >/dev/null && [ -f "$CPU_LIB" ]; then
    n=$(objdump -d --no-show-raw-insn "$CPU_LIB" | grep -c '%zmm')
    if [ "$n" -eq 0 ]; then ok "llama.cpp CPU code is portable (no AVX-512 instructions)"
    else echo "  WARN  llama.cpp was built native: $n AVX-512 instructions; crashes on CPUs without AVX-512 (installers/linux/portable_llama.sh)"; fi
fi
if [ -s "$DIST/Enclave/_internal/assets/THIRD_PARTY_LICENSES" ]; then ok "THIRD_PARTY_LICENSES bundled"; else bad "THIRD_PARTY_LICENSES missing"; fi

# The bill of materials beside the program: every shipped Python distribution with the lock's
# sha256 (scripts/sbom.py --verify), and `doctor --json` reporting the file's digest.
SBOM="$DIST/Enclave/sbom.cdx.json"
if [ -s "$SBOM" ]; then
    if out=$(cd "$ROOT" && "$PY" scripts/sbom.py --verify "$SBOM" 2>&1); then ok "SBOM lists every locked distribution with its sha256"
    else bad "SBOM differs from the lock"; echo "$out" | sed 's/^/        /'; fi
    want=$(sha256sum "$SBOM" | cut -d' ' -f1)
    if clean "$APP" doctor --json 2>/dev/null | grep -q "\"sha256\": \"$want\""; then ok "doctor --json gives the SBOM's sha256 ($(echo "$want" | cut -c1-12)…)"
    else bad "doctor --json does not report the SBOM's sha256 $want"; fi
else
    bad "no $SBOM (make package writes it)"
fi

# A real model through the real worker process (multiprocessing spawn of the frozen exe).
MODEL="$TMP/tiny-moe.gguf"
if (cd "$ROOT" && "$PY" -m tests.tiny_models "$MODEL" >/dev/null 2>&1); then
    NET=""
    if unshare -n true 2>/dev/null; then NET="unshare -n"; fi
    t0=$(now)
    # shellcheck disable=SC2086
    frozen=$($NET env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 ENCLAVE_HOME="$TMP/enclave" \
        "$APP" run "$MODEL" "hello world" --max-tokens 16 --temperature 0 2>"$TMP/run.err"); rc=$?
    t1=$(now)
    source=$(cd "$ROOT" && ENCLAVE_HOME="$TMP/source-home" "$PY" -m app run "$MODEL" "hello world" \
        --max-tokens 16 --temperature 0 2>/dev/null)
    if [ $rc -ne 0 ]; then
        bad "run tiny model: rc=$rc"; sed 's/^/        /' "$TMP/run.err"
    elif [ -z "$frozen" ] || [ "$frozen" != "$source" ]; then
        bad "run tiny model: output differs from the source tree's"
    else
        ok "run tiny model: 16 tokens, same as from source, $(ms "$t0" "$t1") ms${NET:+, with no network (unshare -n)}"
    fi
else
    bad "could not write the tiny model with $PY -m tests.tiny_models"
fi

# A vision model: the tiny model with a tiny projector (libmtmd in the package), an image read by
# Pillow in the frozen reader process; and a file that only pretends to be an image refused.
PROJECTOR="$TMP/mmproj-tiny.gguf"
if (cd "$ROOT" && "$PY" -m tests.tiny_projector "$PROJECTOR" >/dev/null 2>&1 &&
    "$PY" -c "import sys; from PIL import Image; Image.new('RGB', (60, 40), (200, 30, 30)).save(sys.argv[1])" \
        "$TMP/red.png"); then
    printf 'not an image' > "$TMP/fake.png"
    clean "$APP" models import "$MODEL" --mmproj "$PROJECTOR" --in-place >"$TMP/vision.out" 2>&1
    seen=$(clean "$APP" run tiny-moe "what is it" --image "$TMP/red.png" --max-tokens 8 --temperature 0 \
        2>>"$TMP/vision.out"); rc=$?
    refused=$(clean "$APP" run tiny-moe "and this" --image "$TMP/fake.png" 2>&1); refused_rc=$?
    if [ $rc -ne 0 ] || [ -z "$seen" ]; then
        bad "vision model: rc=$rc"; sed 's/^/        /' "$TMP/vision.out" | tail -5
    elif [ $refused_rc -ne 2 ] || [ "$(printf '%s\n' "$refused" | wc -l)" -ne 1 ]; then
        bad "a fake image: rc=$refused_rc, said: $refused"
    else
        ok "vision model: answered about an image (libmtmd, Pillow in the reader); a fake image refused: ${refused#enclave: error: }"
    fi
else
    bad "could not write the tiny projector or the image with $PY"
fi

# llama.cpp's CPU variant (backends loaded at run time): the best one for this machine, and with
# its file taken away, a lower one that still answers.
variant_of() { clean "$1" doctor --json 2>/dev/null | "$PY" -c 'import json, sys
print((json.load(sys.stdin).get("backend_libraries") or {}).get("cpu_variant") or "")'; }
VARIANT=$(variant_of "$APP")
if [ -n "$VARIANT" ]; then
    ok "llama.cpp loads its CPU variant '$VARIANT' here ($(ls "$DIST/Enclave/_internal/llama_cpp/lib/" | grep -c '^libggml-cpu-') variants shipped)"
    cp -r "$DIST/Enclave" "$TMP/fallback"
    rm -f "$TMP/fallback/_internal/llama_cpp/lib/libggml-cpu-$VARIANT.so"
    LOWER=$(variant_of "$TMP/fallback/Enclave")
    answer=$(clean "$TMP/fallback/Enclave" run "$MODEL" "hello world" --max-tokens 8 --temperature 0 2>"$TMP/fallback.err")
    if [ -n "$LOWER" ] && [ "$LOWER" != "$VARIANT" ] && [ -n "$answer" ]; then
        ok "without libggml-cpu-$VARIANT.so, '$LOWER' loads and the tiny model answers"
    else
        bad "without libggml-cpu-$VARIANT.so: variant '$LOWER', answer '$answer'"; sed 's/^/        /' "$TMP/fallback.err" | tail -5
    fi
    rm -rf "$TMP/fallback"
else
    bad "doctor --json names no CPU variant: llama.cpp is not built with every CPU variant (make package does it)"
fi

# The GUI: started offscreen, terminated with SIGTERM, must go without a crash.
if clean "$APP" gui --help >/dev/null 2>&1; then
    # Not through clean(): $! must be the app itself, not a subshell.
    env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 ENCLAVE_HOME="$TMP/enclave" QT_QPA_PLATFORM=offscreen \
        "$APP" gui >"$TMP/gui.out" 2>"$TMP/gui.err" &
    pid=$!
    LEFT="$pid"
    sleep 6
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        wait "$pid"; rc=$?
        LEFT=""
        if kill -0 "$pid" 2>/dev/null; then
            bad "gui: still running 10 s after SIGTERM"; LEFT="$pid"
        elif { [ $rc -eq 0 ] || [ $rc -eq 143 ]; } && ! grep -q -E "Traceback|Fatal Python error|core dumped|Segmentation|Aborted" "$TMP/gui.err"; then
            ok "gui (offscreen): up for 6 s, exit $rc on SIGTERM, no crash"
        else
            bad "gui: exit $rc after SIGTERM"; sed 's/^/        /' "$TMP/gui.err" | tail -20
        fi
    else
        wait "$pid"; rc=$?; LEFT=""
        bad "gui (offscreen): exited by itself within 6 s (rc=$rc)"; sed 's/^/        /' "$TMP/gui.err" | tail -20
    fi
    # No worker or other child may outlive the window (multiprocessing's resource tracker
    # takes a moment to notice its parent is gone: give it 5 s).
    i=0; while pgrep -f "^$APP" >/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    orphans=$(pgrep -f "^$APP" || true)
    if [ -n "$orphans" ]; then
        bad "processes left behind:"; ps -o pid,ppid,args -p "$(echo $orphans | tr ' ' ',')" | sed 's/^/        /'; LEFT="$orphans"
    else
        ok "gui: nothing left running"
    fi

    # Time to the first visible window, on a virtual X server (xcb, as on a desktop).
    if command -v xvfb-run >/dev/null && command -v xdotool >/dev/null; then
        cat > "$TMP/show.sh" <<EOF
#!/bin/sh
t0=\$(date +%s%N)
env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 ENCLAVE_HOME="$TMP/enclave" DISPLAY="\$DISPLAY" \
    XAUTHORITY="\$XAUTHORITY" QT_QPA_PLATFORM=xcb "$APP" gui >"$TMP/xgui.out" 2>"$TMP/xgui.err" &
pid=\$!
# Poll every 50 ms (xdotool's own --sync waits in 0.5 s steps).
win=""; i=0
while [ -z "\$win" ] && [ \$i -lt 1200 ]; do
    win=\$(xdotool search --onlyvisible --pid \$pid 2>/dev/null | head -1); [ -n "\$win" ] || sleep 0.05; i=\$((i + 1))
done
t1=\$(date +%s%N)
[ -n "\$win" ] && echo "\$(((t1 - t0) / 1000000)) ms, window '\$(xdotool getwindowname \$win)'"
kill -TERM \$pid 2>/dev/null; wait \$pid
EOF
        chmod +x "$TMP/show.sh"
        for run in first warm; do
            note=""
            if [ $run = first ] && sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then note=" [cold: page cache dropped]"; fi
            shown=$(xvfb-run -a "$TMP/show.sh" 2>/dev/null | tail -1)
            if [ -n "$shown" ]; then
                echo "  time  gui ($run run, Xvfb, xcb): first window visible after $shown$note"
            else
                bad "gui on Xvfb: no visible window within 60 s"; sed 's/^/        /' "$TMP/xgui.err" | tail -20; break
            fi
        done
    else
        skip "gui show time: needs xvfb-run and xdotool"
    fi
else
    skip "gui: this build has no 'gui' command yet (app/cli/gui.py); the check runs once it has"
fi

# ---------------------------------------------------------------- the .deb
if [ -f "$DEB" ]; then
    echo "$(basename "$DEB") ($(du -h "$DEB" | cut -f1))"
    R="$TMP/root"
    dpkg-deb -x "$DEB" "$R"
    control=$(dpkg-deb -f "$DEB")
    if echo "$control" | grep -q "^Version: $VERSION$" && echo "$control" | grep -q "^Depends: .*libegl1"; then ok "control: Version $VERSION, Depends"; else bad "control file"; fi
    # Depends is what build_deb.sh derives from ui/qt_requirements.py's XCB_LIBRARIES.
    if [ "$(dpkg-deb -f "$DEB" Depends)" = "$("$ROOT/installers/linux/build_deb.sh" --control-only | sed -n 's/^Depends: //p')" ]; then
        ok "Depends: the Qt (xcb, OpenGL, Wayland) libraries of ui/qt_requirements.py"
    else
        bad "Depends is not what build_deb.sh --control-only derives"
    fi
    [ -s "$R/opt/enclave/sbom.cdx.json" ] && ok "/opt/enclave/sbom.cdx.json" || bad "the .deb has no /opt/enclave/sbom.cdx.json"
    for f in opt/enclave/Enclave opt/enclave/_internal/assets/catalog.json opt/enclave/_internal/assets/THIRD_PARTY_LICENSES \
        opt/enclave/_internal/llama_cpp/lib/libllama.so usr/share/applications/enclave.desktop \
        usr/share/icons/hicolor/scalable/apps/enclave.svg usr/share/doc/enclave/copyright; do
        [ -e "$R/$f" ] || bad "missing /$f"
    done
    for s in 16 24 32 48 64 128 256 512; do [ -s "$R/usr/share/icons/hicolor/${s}x${s}/apps/enclave.png" ] || bad "missing ${s}x${s} icon"; done
    [ "$(readlink "$R/usr/bin/enclave")" = /opt/enclave/Enclave ] && ok "files, /usr/bin/enclave -> /opt/enclave/Enclave, icons 16-512" || bad "/usr/bin/enclave link"
    dpkg-deb -I "$DEB" postinst >/dev/null 2>&1 && dpkg-deb -I "$DEB" postrm >/dev/null 2>&1 && ok "postinst, postrm" || bad "postinst/postrm missing"
    if command -v desktop-file-validate >/dev/null; then
        if desktop-file-validate "$R/usr/share/applications/enclave.desktop"; then ok "desktop-file-validate"; else bad "desktop entry invalid"; fi
    else
        skip "desktop-file-validate not installed (apt-get install desktop-file-utils)"
    fi
    # Run it the way /usr/bin/enclave does: through a symlink from elsewhere.
    ln -s "$R/opt/enclave/Enclave" "$TMP/enclave-link"
    out=$(clean "$TMP/enclave-link" --version 2>&1)
    [ "$out" = "enclave $VERSION" ] && ok "extracted package runs through a symlink" || bad "extracted package: '$out'"
else
    bad "no $DEB"
fi

# ---------------------------------------------------------------- the tarball
if [ -f "$TARBALL" ]; then
    echo "$(basename "$TARBALL") ($(du -h "$TARBALL" | cut -f1))"
    mkdir -p "$TMP/usb"
    tar -C "$TMP/usb" -xzf "$TARBALL"
    P="$TMP/usb/Enclave-$VERSION"
    out=$(env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 "$P/Enclave" doctor 2>&1); rc=$?
    if [ $rc -eq 0 ] && echo "$out" | grep -q "database  $P/data/"; then
        ok "portable: doctor runs, data kept in $(basename "$P")/data next to the launcher"
    else
        bad "portable: rc=$rc"; echo "$out" | sed 's/^/        /'
    fi
    if [ -f "$MODEL" ]; then
        out=$(env -i PATH=/usr/bin:/bin HOME="$TMP/home" LANG=C.UTF-8 "$P/Enclave" run "$MODEL" hello --max-tokens 4 --temperature 0 2>&1); rc=$?
        [ $rc -eq 0 ] && ok "portable: run tiny model" || { bad "portable run: rc=$rc"; echo "$out" | tail -5; }
    fi
else
    bad "no $TARBALL"
fi

echo
# The GPU add-on takes hours of nvcc to build, so it is not built here: its dry run must show the
# locked llama.cpp, the CUDA backend alone, and a package for exactly this version.
echo "installers/gpu/build_cuda_backend.sh (dry run)"
out=$("$ROOT/installers/gpu/build_cuda_backend.sh" --dry-run 2>&1); rc=$?
if [ $rc -eq 0 ] && echo "$out" | grep -q -- "-DGGML_BACKEND_DL=ON -DGGML_CUDA=ON" \
        && echo "$out" | grep -q "Depends: enclave (= $VERSION)" && echo "$out" | grep -q -- "--require-hashes" \
        && echo "$out" | grep -q "scripts/sbom_gpu.py .*--cuda-lock installers/gpu/cuda13-lock.txt"; then
    ok "$(echo "$out" | sed -n 's/^ *Package: //p') would build from the locked llama.cpp and CUDA wheels, for Enclave $VERSION, with its SBOM"
else
    bad "build_cuda_backend.sh --dry-run: rc=$rc"; echo "$out" | tail -5 | sed 's/^/        /'
fi

# A built CUDA add-on (ENCLAVE_CUDA_ADDON, or the tarball build_cuda_backend.sh left in dist/),
# extracted over a copy of the portable folder as a user would: libggml-cuda.so finds its CUDA
# runtime beside itself, doctor lists it (loaded, or why not: here usually "no NVIDIA driver"),
# and the tiny model still answers, on the GPU or on the CPU.
ADDON=${ENCLAVE_CUDA_ADDON:-$(ls "$DIST/Enclave-$VERSION-linux-$(uname -m)"-cuda*.tar.gz 2>/dev/null | tail -n 1)}
if [ -n "$ADDON" ] && [ -f "$ADDON" ]; then
    echo "$(basename "$ADDON") ($(du -h "$ADDON" | cut -f1))"
    C="$TMP/cuda/Enclave-$VERSION"
    mkdir -p "$C"
    cp -r "$DIST/Enclave" "$C/lib"
    tar -C "$TMP/cuda" -xzf "$ADDON"
    CUDA_LIB="$C/lib/_internal/llama_cpp/lib/libggml-cuda.so"
    if [ ! -f "$CUDA_LIB" ]; then
        bad "the add-on has no Enclave-$VERSION/lib/_internal/llama_cpp/lib/libggml-cuda.so (built for another version?)"
    else
        # Every CUDA library it needs resolves beside it ($ORIGIN); only the driver's may be missing.
        links=$(ldd "$CUDA_LIB" 2>&1)
        elsewhere=$(echo "$links" | awk -v d="$(dirname "$CUDA_LIB")/" '$1 ~ /^lib(cudart|cublas|cublasLt|ggml-base)\./ && index($3, d) != 1 { print $1 " -> " $3 }')
        absent=$(echo "$links" | awk '/not found/ { print $1 }' | tr '\n' ' ')
        if [ -z "$elsewhere" ] && { [ -z "$absent" ] || [ "$absent" = "libcuda.so.1 " ]; }; then
            ok "libggml-cuda.so finds libcudart, libcublas and libggml-base beside itself${absent:+ (no NVIDIA driver here: libcuda.so.1 not found)}"
        else
            bad "libggml-cuda.so links outside its folder: ${elsewhere:-}${absent:+ missing: $absent}"
        fi
        line=$(clean "$C/lib/Enclave" doctor 2>&1 | grep -E '^ +(loaded|not loaded) +libggml-cuda\.so')
        state=$(clean "$C/lib/Enclave" doctor --json 2>/dev/null | "$PY" -c 'import json, sys
files = (json.load(sys.stdin).get("backend_libraries") or {}).get("files") or []
cuda = [f for f in files if f["file"] == "libggml-cuda.so"]
print(("loaded" if cuda[0]["loaded"] else "not loaded: " + cuda[0]["reason"]) if cuda else "")')
        case "$state" in
            *"when the application was frozen"*) bad "doctor gives PyInstaller's wrapper text, not dlopen's reason: '$state'" ;;
            loaded|"not loaded: "?*) ok "doctor: $(echo "$line" | sed 's/  */ /g; s/^ //') (--json: $state)" ;;
            *) bad "doctor does not list libggml-cuda.so with a reason: '$line' / --json '$state'" ;;
        esac
        if [ -f "$MODEL" ]; then
            answer=$(clean "$C/lib/Enclave" run "$MODEL" "hello world" --max-tokens 8 --temperature 0 2>"$TMP/cuda.err")
            if [ -n "$answer" ]; then ok "with the CUDA add-on, the tiny model answers"
            else bad "with the CUDA add-on, the tiny model does not answer"; sed 's/^/        /' "$TMP/cuda.err" | tail -5; fi
        fi
    fi
    rm -rf "$TMP/cuda"
else
    skip "CUDA add-on: none built (installers/gpu/build_cuda_backend.sh writes dist/Enclave-$VERSION-linux-$(uname -m)-cuda13.tar.gz; or set ENCLAVE_CUDA_ADDON)"
fi

if [ $FAILED -eq 0 ]; then echo "smoke test passed"; else echo "smoke test: $FAILED check(s) failed"; fi
exit $FAILED
