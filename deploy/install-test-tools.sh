#!/usr/bin/env bash
# Tools the deploy/ tests need (csi/tests/deploy.rs): kubernetes-validate from PyPI (the
# Kubernetes OpenAPI schemas of every supported version, offline). kubectl (client only, for
# `kubectl kustomize`) comes from the distribution's packages via scripts/install-prereqs.sh.
# Called by scripts/install-prereqs.sh; safe to run again.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

if python3 -c 'import kubernetes_validate, sys; sys.exit(0 if kubernetes_validate.__version__ == sys.argv[1] else 1)' \
    "$KUBERNETES_VALIDATE_VERSION" 2>/dev/null; then
    exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
