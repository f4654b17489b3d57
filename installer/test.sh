#!/usr/bin/env bash
# The whole test suite on a fresh machine: dependencies, build, every CTest suite.
# CI=1 selects the -Werror preset. Extra arguments go to ctest (e.g. -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
installer/install-deps.sh
echo "== test.sh: dependencies in $((SECONDS - start)) s"
preset=dev
[ "${CI:-0}" = "1" ] && preset=ci
cmake --preset "$preset"
cmake --build --preset "$preset"
echo "== test.sh: configured and built in $((SECONDS - start)) s"
ctest --preset "$preset" "$@"
echo "== test.sh: tested in $((SECONDS - start)) s"
