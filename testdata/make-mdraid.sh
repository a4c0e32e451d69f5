#!/bin/sh
# Makes the mdraid superblock fixtures in testdata/mdraid/ (see testdata/README.md): for each
# superblock version, one member of a degraded two-device RAID1 written by `mdadm --create` on a
# 4 MiB loop-mounted image, of which the 4 KiB block holding the superblock is kept (the rest of
# the image is zeros). Needs the md driver, which our build hosts lack; run it in the VM rig from
# the repository root:
#
#     VM_SHARE=/tmp/md scripts/vm-run sh testdata/make-mdraid.sh    # output in /tmp/md
#
# (or as root on a Linux host with md: OUT=DIR sh testdata/make-mdraid.sh).
set -eu
out=${OUT:-${VM_SHARE_DIR:?set OUT or run under scripts/vm-run}}
export MDADM_NO_UDEV=1
n=0
# version, then the 4 KiB block (in 4 KiB units) holding its superblock in a 4 MiB member:
# 0.90 at the last 64 KiB boundary minus 64 KiB, 1.0 8 KiB before the end, 1.1 at 0, 1.2 at 4 KiB.
for spec in 0.90:1008 1.0:1022 1.1:0 1.2:1; do
  v=${spec%%:*} block=${spec#*:}
  img=$out/mdraid-$v.img
  rm -f "$img"
  truncate -s 4M "$img"
  loop=$(losetup -f --show "$img")
  md=/dev/md$n
  mdadm --create "$md" --run --force --metadata=$v --level=1 --raid-devices=2 "$loop" missing
  mdadm --stop "$md"
  losetup -d "$loop"
  dd if="$img" of="$out/$v.bin" bs=4096 skip="$block" count=1 status=none
  n=$((n + 1))
done
ls -l "$out"
