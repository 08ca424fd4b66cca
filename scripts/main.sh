#!/usr/bin/env bash
# The main job: set up, train ResNet-20 on the built-in Fashion-MNIST for three epochs (about
# three minutes on an idle 2-core machine), and show the curves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh main
out=runs/quickstart
node dist/src/cli/main.js train --model resnet20 --data fashion-mnist --epochs 3 --out "$out" "$@"
node dist/src/cli/main.js plot "$out"
echo
echo "Run folder: $out (metrics.jsonl, checkpoint, curves.png)"
