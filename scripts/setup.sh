#!/usr/bin/env bash
# Sets up a fresh Debian machine for Residual: the Debian packages it needs (installed only when
# missing), the npm packages, the native oneDNN addon and the TypeScript build.
#   scripts/setup.sh main   what training and inference need
#   scripts/setup.sh test   that, plus what the tests need (PyTorch as the oracle, Chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-main}

packages=(libdnnl-dev dataset-fashion-mnist g++ make python3)
# Open MPI: the optional data-parallel addon (residual_mpi) builds against it; the tests run mpirun
packages+=(openmpi-bin libopenmpi-dev)
if [ "$mode" = test ]; then
  # chromium: the browser test of `residual serve`'s page (driven by playwright-core)
  packages+=(python3-torch python3-torchvision chromium)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# onnxruntime-node would otherwise try to download CUDA binaries at install time.
export ONNXRUNTIME_NODE_INSTALL=skip
# A user's `npm install` falls back to the reference backend when the engine cannot be built; here
# (the quick start, the tests, CI) a failed build must stop the setup.
export RESIDUAL_REQUIRE_NATIVE=1
# npm ci builds the native addon (node-gyp) and the TypeScript (prepare) itself.
# The MPI addon too, where Open MPI is installed: a checkout built before it was would lack it.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ ! -f build/Release/residual_native.node ] ||
   { command -v mpicc >/dev/null && [ ! -f build/Release/residual_mpi.node ]; }; then
  echo "setup: npm ci (builds the native addon and the TypeScript)"
  npm ci --no-audit --no-fund
else
  npm run --silent build
fi
node dist/src/cli/main.js info
