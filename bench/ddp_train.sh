#!/usr/bin/env bash
# 2 ranks x 1 thread (mpirun, data-parallel, global batch 128) against 1 process x 2 threads, on
# Fashion-MNIST, one epoch of a subset each, interleaved (A B A B ...) because the machine is shared.
# Prints one JSON line per run: the epoch's metrics line (images/s, phase times, allreduce seconds).
#   bash bench/ddp_train.sh MODEL SUBSET ROUNDS [extra train args]
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 subset=$2 rounds=$3; shift 3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(train --model "$model" --subset "$subset" --batch 128 --epochs 1 --json "$@")
for r in $(seq 1 "$rounds"); do
  for setup in single ddp; do
    rm -rf "$tmp/run"
    if [ "$setup" = single ]; then
      line=$(node dist/src/cli/main.js "${common[@]}" --threads 2 --out "$tmp/run" | grep '"epoch":1' | head -1)
    else
      line=$(mpirun -np 2 --oversubscribe node dist/src/cli/main.js "${common[@]}" --distributed --threads 1 --out "$tmp/run" | grep '"epoch":1' | head -1)
    fi
    echo "{\"setup\":\"$setup\",\"model\":\"$model\",\"round\":$r,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"date\":\"$(date -u +%FT%TZ)\",\"metrics\":$line}"
  done
done
