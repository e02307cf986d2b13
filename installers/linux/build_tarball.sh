#!/bin/sh
# Build dist/Enclave-<version>-linux-<arch>.tar.gz: a portable folder that runs from
# anywhere (a USB stick, say) without installing, from the PyInstaller folder dist/Enclave/.
#
#   Enclave-<version>/Enclave        launcher: keeps all data in ./data next to itself
#   Enclave-<version>/lib/Enclave    the frozen app (+ lib/_internal/)
#
# The launcher sets ENCLAVE_HOME to the data folder next to it (unless ENCLAVE_HOME is
# already set), so models, conversations and settings travel with the folder. Before it opens
# the window on X11 it checks the system libraries Qt's xcb plugin loads (XCB_LIBRARIES in
# ui/qt_requirements.py, written into the launcher here) and names a missing one with its
# Debian package in one line, as the app does, instead of Qt's "could not load the Qt
# platform plugin" (libraries QtGui itself links to, libGL/libEGL among them, would fail
# before the app's own check could run).
#
#   installers/linux/build_tarball.sh --launcher-only    print the launcher and stop
set -eu

LAUNCHER_ONLY=""
case "${1:-}" in
    --launcher-only) LAUNCHER_ONLY=1 ;;
    "") ;;
    *) echo "usage: build_tarball.sh [--launcher-only]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIST=${ENCLAVE_DIST:-$ROOT/dist}  # ENCLAVE_DIST: another PyInstaller output folder
APPDIR="$DIST/Enclave"
# "soname package" per line, from the one list.
XCB_MAP=$(sed -n '/^XCB_LIBRARIES/,/^}/s/^ *"\([^"]*\)": *"\([^"]*\)",\{0,1\}$/\1 \2/p' "$ROOT/ui/qt_requirements.py")
[ -n "$XCB_MAP" ] || { echo "build_tarball: no XCB_LIBRARIES found in ui/qt_requirements.py" >&2; exit 1; }

launcher() {
    cat <<'LAUNCHER'
#!/bin/sh
# Portable Enclave: everything it writes goes to the "data" folder next to this script.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P)
: "${ENCLAVE_HOME:=$here/data}"
export ENCLAVE_HOME

# Whether Qt will open the window through its xcb (X11) plugin: QT_QPA_PLATFORM decides when
# set; otherwise a Wayland session goes to Qt's Wayland plugin first (ui/qt_requirements.py).
uses_xcb() {
    case "${QT_QPA_PLATFORM:-}" in
        xcb|xcb:*|"xcb;"*) return 0 ;;
        "") ;;
        *) return 1 ;;
    esac
    [ -n "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ "${XDG_SESSION_TYPE:-}" != wayland ]
}

# The libraries the xcb plugin needs that neither the system's loader cache nor Enclave's own
# folder has, as one line naming their Debian packages; nothing when all are there (or when
# ldconfig is not available to ask: then Qt reports for itself).
missing_libraries() {
    known=""
    for ldconfig in ldconfig /sbin/ldconfig /usr/sbin/ldconfig; do
        known=$("$ldconfig" -p 2>/dev/null) && [ -n "$known" ] && break
    done
    [ -n "$known" ] || return 0
    sonames="" packages="" count=0
    while read -r soname package; do
        [ -e "$here/lib/_internal/$soname" ] || [ -e "$here/lib/_internal/PySide6/Qt/lib/$soname" ] && continue
        printf '%s\n' "$known" | grep -q "^[[:space:]]*$soname (" && continue
        sonames="$sonames${sonames:+, }$soname"
        case " $packages " in *" $package "*) ;; *) packages="$packages${packages:+ }$package" ;; esac
        count=$((count + 1))
    done <<XCB
@XCB_MAP@
XCB
    [ "$count" -eq 0 ] && return 0
    if [ "$count" -eq 1 ]; then what="library" it="it"; else what="libraries" it="them"; fi
    echo "Enclave needs the system $what $sonames: install $it with 'sudo apt install $packages' (or your distribution's equivalent)."
}

case "${1:-gui}" in
    gui)
        if uses_xcb; then
            message=$(missing_libraries)
            if [ -n "$message" ]; then
                echo "$message" >&2
                exit 2
            fi
        fi ;;
esac
exec "$here/lib/Enclave" "$@"
LAUNCHER
}

# The launcher with the list written in where it says @XCB_MAP@.
write_launcher() {
    launcher | awk -v map="$XCB_MAP" '$0 == "@XCB_MAP@" { print map; next } { print }'
}

if [ -n "$LAUNCHER_ONLY" ]; then
    write_launcher
    exit 0
fi

[ -x "$APPDIR/Enclave" ] || { echo "build_tarball: $APPDIR/Enclave is missing; run pyinstaller build.spec first" >&2; exit 1; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/app/__init__.py")
ARCH=$(uname -m)
NAME="Enclave-$VERSION"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
TOP="$STAGE/$NAME"
mkdir -p "$TOP"
cp -a "$APPDIR" "$TOP/lib"
install -m 644 "$ROOT/assets/enclave.png" "$TOP/enclave.png"

write_launcher > "$TOP/Enclave"
chmod 755 "$TOP/Enclave"

cat > "$TOP/README.txt" <<README
Enclave $VERSION, portable build for Linux ($ARCH)

  ./Enclave                  open the window
  ./Enclave --help           the command line (./Enclave run MODEL PROMPT, ./Enclave doctor ...)

Everything Enclave writes (models, conversations, libraries, settings, logs) goes to the
"data" folder next to the Enclave launcher, so this folder can live on a USB stick.
Set ENCLAVE_HOME to keep the data elsewhere.

Needs glibc 2.36 or newer (Debian 12, Ubuntu 23.04 or newer) and the usual desktop
libraries (OpenGL/EGL, xcb, Wayland); the .deb package's Depends line lists them. If one
the X11 window needs is missing, ./Enclave says which, and the package to install, in one
line before it opens anything.
Third-party licences: lib/_internal/assets/THIRD_PARTY_LICENSES. Bill of materials (every
component with its version and sha256, CycloneDX JSON): lib/sbom.cdx.json.
README

OUT="$DIST/$NAME-linux-$ARCH${ENCLAVE_VARIANT:+-$ENCLAVE_VARIANT}.tar.gz"
tar -C "$STAGE" -czf "$OUT" "$NAME"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
