#!/usr/bin/env bash
# Builds Cosmian KMS (crates.io `cosmian_kms_server`) once and caches the binary, for the KMIP
# interoperability tests in kms/tests/peers/cosmian.rs. Cosmian KMS is BUSL-1.1: it is a test peer we
# run next to our code, never a dependency, and nothing of it is committed.
#
# Facts that shape this script (Cosmian KMS 5.28.0, Debian 12):
#   - the default build loads OpenSSL's FIPS provider, which Debian does not ship, and refuses to
#     start; the `non-fips` feature avoids that;
#   - the published crate's `non-fips` feature names `cosmian_kms_client_utils`, which is only a
#     dev-dependency there, so cargo rejects the feature: we drop that one entry;
#   - it must build `--locked` with its own Cargo.lock (a newer cosmian_cover_crypt breaks it);
#   - the default `interop` feature only adds a test-only KMIP operation: left out.
# Build profile: opt-level 1, no LTO. This is a test peer; speed of its crypto does not matter,
# build time on a 2-core CI machine does.
#
# Output: ${XDG_CACHE_HOME:-~/.cache}/onmetal-peers/cosmian_kms-$VERSION/cosmian_kms
# (COSMIAN_KMS_BIN overrides where the tests look).
set -euo pipefail

VERSION=5.28.0
SHA256=9b209aff1990f1f2303f07ccdfab498064f4e27559e7723d6af159c79c4785fb
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/onmetal-peers/cosmian_kms-$VERSION
BIN=$CACHE/cosmian_kms

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "Cosmian KMS $VERSION ok ($BIN)"
  exit 0
fi

# One build at a time: a second run (another test command started meanwhile) waits for the
# first and then finds its binary.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build-lock"
flock 9
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "Cosmian KMS $VERSION ok ($BIN)"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/cosmian-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "install-cosmian: building Cosmian KMS $VERSION (about 10-17 minutes on 2 cores, once)"
curl -sSfL --retry 3 -o "$work/src.crate" \
  "https://static.crates.io/crates/cosmian_kms_server/cosmian_kms_server-$VERSION.crate"
echo "$SHA256  $work/src.crate" | sha256sum -c --quiet -
tar -xzf "$work/src.crate" -C "$work"
src=$work/cosmian_kms_server-$VERSION
grep -q '"cosmian_kms_client_utils/non-fips",' "$src/Cargo.toml" \
  || { echo "install-cosmian: the non-fips feature no longer looks as expected" >&2; exit 1; }
sed -i '/"cosmian_kms_client_utils\/non-fips",/d' "$src/Cargo.toml"

start=$(date +%s)
(
  cd "$src"
  CARGO_TARGET_DIR=$work/target \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo build --release --locked --quiet --no-default-features --features non-fips --bin cosmian_kms
)
mkdir -p "$CACHE"
install -m 0755 "$work/target/release/cosmian_kms" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "install-cosmian: built in $(( $(date +%s) - start )) s: $("$BIN" --version)"
