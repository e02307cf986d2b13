#!/bin/sh
# Build dist/Enclave-<version>-linux-<arch>.tar.gz: a portable folder that runs from
# anywhere (a USB stick, say) without installing, from the PyInstaller folder dist/Enclave/.
#
#   Enclave-<version>/Enclave        launcher: keeps all data in ./data next to itself
#   Enclave-<version>/lib/Enclave    the frozen app (+ lib/_internal/)
#
# The launcher sets ENCLAVE_HOME to the data folder next to it (unless ENCLAVE_HOME is
# already set), so models, conversations and settings travel with the folder.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIST=${ENCLAVE_DIST:-$ROOT/dist}  # ENCLAVE_DIST: another PyInstaller output folder
APPDIR="$DIST/Enclave"
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

cat > "$TOP/Enclave" <<'LAUNCHER'
#!/bin/sh
# Portable Enclave: everything it writes goes to the "data" folder next to this script.
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P)
: "${ENCLAVE_HOME:=$here/data}"
export ENCLAVE_HOME
exec "$here/lib/Enclave" "$@"
LAUNCHER
chmod 755 "$TOP/Enclave"

cat > "$TOP/README.txt" <<README
Enclave $VERSION, portable build for Linux ($ARCH)

  ./Enclave                  open the window
  ./Enclave --help           the command line (./Enclave run MODEL PROMPT, ./Enclave doctor ...)

Everything Enclave writes (models, conversations, libraries, settings, logs) goes to the
"data" folder next to the Enclave launcher, so this folder can live on a USB stick.
Set ENCLAVE_HOME to keep the data elsewhere.

Needs glibc 2.36 or newer (Debian 12, Ubuntu 23.04 or newer) and the usual desktop
libraries (OpenGL/EGL, xcb, Wayland); the .deb package's Depends line lists them.
Third-party licences: lib/_internal/assets/THIRD_PARTY_LICENSES.
README

OUT="$DIST/$NAME-linux-$ARCH${ENCLAVE_VARIANT:+-$ENCLAVE_VARIANT}.tar.gz"
tar -C "$STAGE" -czf "$OUT" "$NAME"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
