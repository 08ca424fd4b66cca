#!/usr/bin/env bash
# Interleaved A/B of the ResNet-50 / ResNeXt-50 b16 training step: new (main) vs old (26d053c), f32 and bf16, 2 threads.
out=/tmp/ab-results.jsonl; : > $out
for round in 1 2 3; do
  for model in resnet50 resnext50_32x4d; do
    for tree in /work/main /work/wt-old; do
      for dtype in f32 bf16; do
        r=$(cd $tree && node dist/src/cli/main.js bench --model $model --batch 16 --mode train --input 3x224x224 --threads 2 --warmup 2 --runs 4 --dtype $dtype --json 2>/dev/null | tail -n 1)
        echo "{\"round\":$round,\"tree\":\"$tree\",\"result\":$r}" >> $out
      done
    done
  done
done
echo done >> /tmp/ab-done
