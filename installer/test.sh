#!/usr/bin/env bash
# The whole test suite on a fresh machine: dependencies, build, every CTest suite.
# CI=1 selects the -Werror preset. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
installer/install-deps.sh
preset=dev
[ "${CI:-0}" = "1" ] && preset=ci
cmake --preset "$preset"
cmake --build --preset "$preset"
ctest --preset "$preset" "$@"
