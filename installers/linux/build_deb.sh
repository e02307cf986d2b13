#!/bin/sh
# Build dist/enclave_<version>_<arch>.deb from the PyInstaller folder dist/Enclave/.
#
#   .venv/bin/pyinstaller --noconfirm build.spec && installers/linux/build_deb.sh
#   (or: make package)
#   installers/linux/build_deb.sh --control-only    print DEBIAN/control and stop (no dist/ needed)
#
# Installs to /opt/enclave, with /usr/bin/enclave, the desktop entry and hicolor icons.
# ENCLAVE_VARIANT=full-cuda12 (installers/gpu/build_cuda.sh, the whole app built with CUDA 12) names
# the package enclave-full-cuda12, which replaces the plain enclave package (not to be confused with
# the add-ons enclave-cuda12/-cuda13 of build_cuda_backend.sh, which go beside it). Needs dpkg-deb (Debian/Ubuntu). Build on the oldest distribution you support: the
# bundled libraries need that distribution's glibc or newer (Depends says which).
set -eu

CONTROL_ONLY=""
case "${1:-}" in
    --control-only) CONTROL_ONLY=1 ;;
    "") ;;
    *) echo "usage: build_deb.sh [--control-only]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIST=${ENCLAVE_DIST:-$ROOT/dist}  # ENCLAVE_DIST: another PyInstaller output folder
APPDIR="$DIST/Enclave"
[ -n "$CONTROL_ONLY" ] || [ -x "$APPDIR/Enclave" ] || { echo "build_deb: $APPDIR/Enclave is missing; run pyinstaller build.spec first" >&2; exit 1; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/app/__init__.py")
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
PACKAGE="enclave${ENCLAVE_VARIANT:+-$ENCLAVE_VARIANT}"
VARIANT_FIELDS=""
[ -n "${ENCLAVE_VARIANT:-}" ] && VARIANT_FIELDS="Provides: enclave
Conflicts: enclave
Replaces: enclave
"
# The newest glibc symbol version any bundled binary asks for (e.g. 2.36 on Debian 12).
GLIBC=""
[ -d "$APPDIR" ] && GLIBC=$(find "$APPDIR" -type f \( -name '*.so*' -o -name Enclave \) -exec objdump -T {} + 2>/dev/null \
    | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
GLIBC=${GLIBC:-2.36}

# Qt's platform plugins load these from the system (PyInstaller does not bundle the graphics
# stack); fontconfig and xkbcommon are bundled but bring the font and keymap data. The xcb
# (X11) plugin's packages are read from XCB_LIBRARIES in ui/qt_requirements.py, the one list
# (the app checks the same list at start and names a missing package in one line); the rest
# are the Wayland and DRM pieces that list does not cover.
XCB_PACKAGES=$(sed -n '/^XCB_LIBRARIES/,/^}/s/^ *"[^"]*": *"\([^"]*\)",\{0,1\}$/\1/p' "$ROOT/ui/qt_requirements.py")
[ -n "$XCB_PACKAGES" ] || { echo "build_deb: no XCB_LIBRARIES found in ui/qt_requirements.py" >&2; exit 1; }
DEPENDS="libc6 (>= $GLIBC)"
for pkg in $XCB_PACKAGES libdrm2 libwayland-client0 libwayland-cursor0 libwayland-egl1; do
    case ", $DEPENDS," in *", $pkg,"*) ;; *) DEPENDS="$DEPENDS, $pkg" ;; esac
done

control() {  # DEBIAN/control, with Installed-Size $1 (KiB)
    cat <<EOF
Package: $PACKAGE
Version: $VERSION
Architecture: $ARCH
Maintainer: Enclave maintainers <enclave@localhost>
Installed-Size: $1
Depends: $DEPENDS
${VARIANT_FIELDS}Recommends: gnome-keyring | kwalletmanager | keepassxc
Section: utils
Priority: optional
Description: run open-weight AI models entirely on your own machine
 Enclave runs quantized Mixture-of-Experts GGUF models locally through llama.cpp,
 on the CPU, with no network connection: chat, document libraries with citations,
 and a planner that places every tensor in the memory you have.
 .
 This package ships a self-contained build (Python, Qt and llama.cpp included)
 in /opt/enclave. Command line: enclave --help. Desktop: the Enclave menu entry.
EOF
}

if [ -n "$CONTROL_ONLY" ]; then
    size=0
    [ -d "$APPDIR" ] && size=$(du -sk --apparent-size "$APPDIR" | cut -f1)
    control "$size"
    exit 0
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/enclave"

mkdir -p "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/usr/share/applications" \
    "$PKG/usr/share/doc/enclave" "$PKG/usr/share/icons/hicolor/scalable/apps"
cp -a "$APPDIR" "$PKG/opt/enclave"
ln -s /opt/enclave/Enclave "$PKG/usr/bin/enclave"
install -m 644 "$ROOT/assets/enclave.desktop" "$PKG/usr/share/applications/enclave.desktop"
for png in "$ROOT"/assets/icons/enclave-*.png; do
    size=$(basename "$png" .png | sed 's/enclave-//')
    mkdir -p "$PKG/usr/share/icons/hicolor/${size}x${size}/apps"
    install -m 644 "$png" "$PKG/usr/share/icons/hicolor/${size}x${size}/apps/enclave.png"
done
install -m 644 "$ROOT/assets/enclave.svg" "$PKG/usr/share/icons/hicolor/scalable/apps/enclave.svg"
cat > "$PKG/usr/share/doc/enclave/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Enclave

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
Comment: Enclave bundles third-party software (Python, Qt/PySide6 under LGPL-3.0,
 llama.cpp under MIT, and others). Their licences are listed in full in
 /opt/enclave/_internal/assets/THIRD_PARTY_LICENSES, and every component with its
 version and sha256 in the CycloneDX bill of materials /opt/enclave/sbom.cdx.json.
EOF

# Debian policy: directories 755, files 644 unless executable.
find "$PKG" -type d -exec chmod 755 {} +
find "$PKG/opt" -type f ! -perm -u+x -exec chmod 644 {} +
find "$PKG/opt" -type f -perm -u+x -exec chmod 755 {} +

INSTALLED_SIZE=$(du -sk --apparent-size "$PKG" | cut -f1)
control "$INSTALLED_SIZE" > "$PKG/DEBIAN/control"

cat > "$PKG/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "configure" ]; then
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t -f /usr/share/icons/hicolor || true
fi
exit 0
EOF
cat > "$PKG/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "remove" ] || [ "$1" = "purge" ]; then
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t -f /usr/share/icons/hicolor || true
fi
exit 0
EOF
chmod 755 "$PKG/DEBIAN/postinst" "$PKG/DEBIAN/postrm"

OUT="$DIST/${PACKAGE}_${VERSION}_${ARCH}.deb"
THREADS=""
dpkg-deb --help 2>/dev/null | grep -q threads-max && THREADS="--threads-max=$(nproc)"
# xz (the default) is the smallest; DEB_COMPRESS=zstd builds in a fraction of the time.
# shellcheck disable=SC2086
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" $THREADS --build "$PKG" "$OUT" >/dev/null
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
