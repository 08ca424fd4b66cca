#!/usr/bin/env bash
# Sets up what the tests need (Debian packages, npm packages, native build), then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
npm test
