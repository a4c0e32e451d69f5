#!/usr/bin/env bash
# Tools the deploy/ tests need (csi/tests/deploy.rs): kubectl (client only, for `kubectl
# kustomize`; apt package kubectl, else kubernetes-client) and kubernetes-validate from PyPI
# (the Kubernetes OpenAPI schemas of every supported version, offline).
# Called by scripts/install-prereqs.sh; safe to run again.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

if ! command -v kubectl >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends kubectl \
        || apt-get install -y --no-install-recommends kubernetes-client
fi

if python3 -c 'import kubernetes_validate, sys; sys.exit(0 if kubernetes_validate.__version__ == sys.argv[1] else 1)' \
    "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null; then
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
