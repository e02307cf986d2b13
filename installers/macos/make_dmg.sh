#!/bin/sh
# MACOS ONLY. Packs dist/Enclave.app (from build_app.sh) into
# dist/Enclave-<version>-macos-<arch>.dmg: the app and a link to /Applications to drag it to.
set -eu
[ "$(uname -s)" = Darwin ] || { echo "make_dmg.sh: macOS only" >&2; exit 1; }
cd "$(dirname "$0")/../.."
[ -d dist/Enclave.app ] || { echo "make_dmg.sh: run installers/macos/build_app.sh first" >&2; exit 1; }

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
ARCH=$(uname -m)
OUT="dist/Enclave-$VERSION-macos-$ARCH.dmg"
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ditto dist/Enclave.app "$STAGE/Enclave.app"
ln -s /Applications "$STAGE/Applications"
rm -f "$OUT"
hdiutil create -volname "Enclave $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$OUT"
if [ -n "${ENCLAVE_SIGN_ID:-}" ]; then codesign --sign "$ENCLAVE_SIGN_ID" --timestamp "$OUT"; fi
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
