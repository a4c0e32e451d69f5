#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine, idempotently:
# Debian packages (cryptsetup as the test reference, qemu + busybox + kmod for the VM rig,
# libdevmapper/libclang for the devicemapper crate's bindgen, libssl-dev for the Cosmian KMS
# build, and the tools that make the foreign-signature images of luks2/tests/probe_signatures.rs:
# gdisk, fdisk, lvm2, mdadm, dosfstools, ntfs-3g, btrfs-progs, f2fs-tools, bcache-tools,
# squashfs-tools, genisoimage), Ceph (librbd-dev/librados-dev to build the rbd crate, and the
# daemons of its real single-node test cluster: ceph-mon, ceph-osd, ceph-mgr, ceph-common), the
# KMS test peers (OpenBao's `bao` and PyKMIP from PyPI, Cosmian KMS built from crates.io and
# cached) and cargo-fuzz. Safe to run again: it only installs what is missing.
set -euo pipefail

apt_pkgs=(cryptsetup-bin qemu-system-x86 busybox-static kmod cpio xfsprogs e2fsprogs util-linux
  libdevmapper-dev libclang-dev clang pkg-config keyutils openssl curl dmsetup time
  libssl-dev gdisk fdisk lvm2 mdadm dosfstools ntfs-3g btrfs-progs f2fs-tools bcache-tools
  squashfs-tools genisoimage
  ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-prereqs: apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# KMS peers (versions pinned: the tests were written against these).
if [ -x kms/tests/install-peers.sh ]; then
  bash kms/tests/install-peers.sh
fi

# Deployment manifest tests (csi/tests/deploy.rs): kubectl kustomize, kubernetes-validate.
bash deploy/install-test-tools.sh

# cargo-fuzz runs the fuzz targets on the stable toolchain (with RUSTC_BOOTSTRAP=1).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-prereqs: cargo install cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz@0.13.1 || cargo install --quiet cargo-fuzz
fi
echo "install-prereqs: all prerequisites present"
