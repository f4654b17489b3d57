#!/usr/bin/env bash
# Builds Cetus and starts it. The cetus window is started when it was built;
# without it (or with arguments), cetus-cli runs with the arguments given
# (default: the conformance self-test over the bundled fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
installer/install-deps.sh >/dev/null
cmake --preset dev >/dev/null
cmake --build --preset dev
if [ $# -eq 0 ] && [ -x build/cetus ]; then
    exec build/cetus
fi
[ $# -eq 0 ] && set -- selftest
exec build/cetus-cli "$@"
