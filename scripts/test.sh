#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what is missing, then runs
#   1. the host test suite (unit, known-answer, cryptsetup compatibility, real KMS servers),
#   2. the privileged device-mapper tests inside a VM with Debian's stock kernel,
#   3. a short smoke run of every fuzz target.
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

if [ -x scripts/fuzz-smoke ]; then
  stage "fuzz smoke run"
  scripts/fuzz-smoke
fi

stage "all tests passed"
