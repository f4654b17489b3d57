#!/usr/bin/env bash
# Installs the Debian 12 packages Cetus needs to build and test (idempotent).
# The CUDA toolkit is optional and not installed here (/usr/local/cuda is used when present).
set -euo pipefail

packages=(
    build-essential cmake ninja-build ccache pkg-config git
    libomp-dev clang libclang-rt-14-dev
    libspdlog-dev nlohmann-json3-dev libpcre2-dev libcli11-dev libsqlite3-dev zlib1g-dev
    qt6-base-dev qt6-base-dev-tools libqt6opengl6-dev qt6-charts-dev libqt6sql6-sqlite libxkbcommon-dev fonts-dejavu-core
    qt6-httpserver-dev libcpp-httplib-dev qt6-tools-dev qt6-l10n-tools
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
