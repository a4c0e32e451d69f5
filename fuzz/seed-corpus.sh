#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ for every fuzz target:
#   - LUKS2 targets: testdata/*.img, plus small images made here with cryptsetup (when it is
#     installed) covering PBKDF2 sha256/sha512, Argon2i/Argon2id, 16/32/64 KiB metadata, 256/512-bit
#     keys, two keyslots, a token, a label and subsystem, 512-byte sectors; every image uses the
#     passphrase `correct horse battery staple` (fuzz/src/lib.rs PASSPHRASE) and small KDF costs.
#     binary_header gets each copy's 4096-byte binary header, json_metadata the JSON text, and
#     header_area both header copies, keyslot_open the whole image (header copies + keyslots area).
#   - kmip_ttlv: KMIP 1.x TTLV messages written out below (the spec's encoding examples and the
#     shapes of the requests/responses kms/src/kmip sends and parses).
#   - transit_response: Transit bodies (byte 0: operation, byte 1: HTTP status selector; see
#     transit_response in fuzz/src/lib.rs).
# Idempotent: existing corpus files (including what earlier runs found) are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p "$corpus"/{binary_header,json_metadata,header_area,keyslot_open,kmip_ttlv,transit_response}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

images=()
for f in testdata/*.img; do [ -e "$f" ] && images+=("$f"); done

pass='correct horse battery staple'
printf '%s' "$pass" >"$work/key"
if command -v cryptsetup >/dev/null 2>&1; then
  n=0
  # name | metadata size | keyslots size | key bits | extra options
  while IFS='|' read -r name md ks bits extra; do
    [ -n "$name" ] || continue
    img="$work/$name.img"
    off=$(( (2 * md + ks) / 512 ))
    truncate -s $(( off * 512 )) "$img"
    # shellcheck disable=SC2086
    if cryptsetup luksFormat --type luks2 --batch-mode --key-file "$work/key" --key-size "$bits" \
        --luks2-metadata-size "$md" --luks2-keyslots-size "$ks" --offset "$off" $extra "$img" \
        >/dev/null 2>&1; then
      images+=("$img"); n=$((n + 1))
    else
      echo "seed-corpus: cryptsetup could not make $name (skipped)" >&2
    fi
  done <<'EOF'
pbkdf2-sha256|16384|131072|256|--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha256
pbkdf2-sha512-512|16384|262144|512|--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha512 --label seed --subsystem fuzz
pbkdf2-sha1-512b|16384|131072|256|--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha1 --sector-size 512
argon2id|16384|131072|256|--pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 64 --pbkdf-parallel 1
argon2i-2lanes|32768|131072|256|--pbkdf argon2i --pbkdf-force-iterations 4 --pbkdf-memory 64 --pbkdf-parallel 2
argon2id-64k|65536|262144|512|--pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 128 --pbkdf-parallel 4
cbc-essiv|16384|131072|256|--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-cbc-essiv:sha256
two-slots|16384|262144|256|--pbkdf pbkdf2 --pbkdf-force-iterations 1000
EOF
  # A second keyslot and a token on the two-slots image.
  if [ -e "$work/two-slots.img" ]; then
    printf 'second passphrase' >"$work/key2"
    if cryptsetup luksAddKey --batch-mode --key-file "$work/key" --pbkdf pbkdf2 \
        --pbkdf-force-iterations 1000 "$work/two-slots.img" "$work/key2" >/dev/null 2>&1 &&
      printf '{"type":"onmetal-csi","keyslots":["1"],"wrapped":"vault:v1:AAAA"}' |
        cryptsetup token import --token-id 0 "$work/two-slots.img" >/dev/null 2>&1; then
      :
    else
      echo "seed-corpus: cryptsetup could not add the second keyslot and token" >&2
    fi
  fi
  echo "seed-corpus: $n cryptsetup images"
fi

be64() { od -An -t u8 --endian=big -j "$2" -N 8 "$1" | tr -d ' '; }
for img in "${images[@]}"; do
  base=$(basename "$img" .img)
  hdr=$(be64 "$img" 8)
  # header_area reads past its input as zeros: the two header copies are enough.
  dd if="$img" bs=4096 count=$((2 * hdr / 4096)) status=none >"$corpus/header_area/$base"
  cp "$img" "$corpus/keyslot_open/$base"
  dd if="$img" bs=4096 count=1 status=none >"$corpus/binary_header/$base-primary"
  dd if="$img" bs=4096 skip=$((hdr / 4096)) count=1 status=none >"$corpus/binary_header/$base-secondary"
  dd if="$img" bs=4096 skip=1 count=$((hdr / 4096 - 1)) status=none | tr -d '\000' >"$corpus/json_metadata/$base"
done

# KMIP TTLV seeds (hex, one item each).
ttlv() {
  local hex
  hex=$(printf '%s' "$2" | tr -d ' \n')
  # shellcheck disable=SC2059
  printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')" >"$corpus/kmip_ttlv/$1"
}
ttlv integer '420020 02 00000004 00000008 00000000'
ttlv long '420020 03 00000008 01B69B4BA5749200'
ttlv bigint '420020 04 00000010 0000000000000000 1FFFFFFFFFFFFFFF'
ttlv enum '420020 05 00000004 000000FF 00000000'
ttlv bool '420020 06 00000008 0000000000000001'
ttlv text '420020 07 0000000B 48656C6C6F20576F726C64 0000000000'
ttlv bytes '420020 08 00000003 010203 0000000000'
ttlv datetime '420020 09 00000008 0000000047DA67F8'
ttlv interval '420020 0A 00000004 000D2F00 00000000'
ttlv structure '420020 01 00000020 420004 05 00000004 000000FE 00000000 420005 02 00000004 000000FF 00000000'
# A response message: header (protocol version 1.4, batch count 1) and one batch item with
# operation Encrypt (0x1F), result status Success and a payload with unique identifier and data.
ttlv response '42007B 01 000000B8
  420077 01 00000038
    420069 01 00000020
      42006A 02 00000004 00000001 00000000
      42006B 02 00000004 00000004 00000000
    42000D 02 00000004 00000001 00000000
  42000F 01 00000070
    42005C 05 00000004 0000001F 00000000
    42007F 05 00000004 00000000 00000000
    42007C 01 00000048
      420094 07 00000001 31 00000000000000
      4200C2 08 00000030 000102030405060708090A0B0C0D0E0F000102030405060708090A0B0C0D0E0F000102030405060708090A0B0C0D0E0F'
# A failure: result status Operation Failed, reason Item Not Found, a message.
ttlv failure '42007B 01 00000068
  420077 01 00000010
    42000D 02 00000004 00000001 00000000
  42000F 01 00000048
    42005C 05 00000004 0000000A 00000000
    42007F 05 00000004 00000001 00000000
    42007E 05 00000004 00000001 00000000
    42007D 07 0000000E 6974656D206E6F7420666F756E64 0000'

# Transit bodies: byte 0 = operation (0 encrypt, 1 decrypt, 2 rewrap), byte 1 = status selector
# (0 = HTTP 200, 8 = 400, 9 = 401, 11 = 404, 15 = 503; see STATUSES in fuzz/src/lib.rs).
transit() { { printf "$1"; printf '%s' "$2"; } >"$corpus/transit_response/$3"; }
transit '\000\000' '{"request_id":"1","data":{"ciphertext":"vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==","key_version":1},"warnings":null}' encrypt
transit '\002\000' '{"data":{"ciphertext":"vault:v12:AAAA","key_version":12}}' rewrap
transit '\001\000' '{"request_id":"2","data":{"plaintext":"dGhlIHF1aWNrIGJyb3duIGZveAo="}}' decrypt
transit '\001\010' '{"errors":["cipher: message authentication failed"]}' decrypt-400
transit '\000\010' '{"errors":["encryption key not found"]}' encrypt-400
transit '\000\011' '{"errors":["permission denied"]}' denied
transit '\000\013' '{"errors":[]}' notfound
transit '\000\017' '{"errors":["Vault is sealed"]}' sealed
echo "seed-corpus: ${#images[@]} images; corpus in $corpus/"
