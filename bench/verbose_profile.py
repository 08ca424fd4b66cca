#!/usr/bin/env python3
"""Where a training step's oneDNN time goes: reads ONEDNN_VERBOSE=1 output (stdin), sums the exec
times per primitive kind, direction and data type, and divides by the number of steps.

  ONEDNN_VERBOSE=1 OMP_NUM_THREADS=1 node dist/src/cli/main.js bench --model resnet50 --batch 16 \\
    --mode train --dtype bf16 --threads 1 --warmup 0 --runs 2 | python3 bench/verbose_profile.py --steps 2 --step-ms 3400

--step-ms (the measured step) adds a row for the time outside oneDNN (our own kernels and loops, JS).
--skip-first drops the first step (primitive creation, first-touch page faults): everything up to its
last convolution, a step having (convolution lines / --steps) of them; --steps counts all steps given.
"""
import argparse
import collections
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument('--steps', type=float, default=1)
ap.add_argument('--step-ms', type=float, default=None)
ap.add_argument('--json', action='store_true')
ap.add_argument('--skip-first', action='store_true')
a = ap.parse_args()
lines = [l for l in sys.stdin if l.startswith('onednn_verbose,exec,') or l.startswith('dnnl_verbose,exec,')]
if a.skip_first:
    convs = [i for i, l in enumerate(lines) if l.split(',')[3] == 'convolution']
    per_step = round(len(convs) / a.steps)
    lines = lines[convs[per_step - 1] + 1:]
    a.steps -= 1

tot = collections.Counter()
cnt = collections.Counter()
for line in lines:
    f = line.rstrip('\n').split(',')
    kind, impl, prop, mds = f[3], f[4], f[5], f[6]
    ms = float(f[-1])
    dts = sorted({tok.split(':')[0].split('_')[-1] for tok in mds.split(' ') if '_' in tok.split(':')[0]})
    if kind == 'convolution':
        key = f'conv {prop} ({"bf16" if "bf16" in mds else "f32"})'
    elif kind == 'reorder':
        key = 'reorder ' + ('f32->bf16' if 'src_f32' in mds and 'dst_bf16' in mds else 'bf16->f32' if 'src_bf16' in mds and 'dst_f32' in mds else 'same type')
    else:
        key = f'{kind} {prop}'
    tot[key] += ms
    cnt[key] += 1
rows = sorted(tot.items(), key=lambda kv: -kv[1])
total = sum(tot.values()) / a.steps
out = [{'op': k, 'ms_per_step': round(v / a.steps, 1), 'calls_per_step': round(cnt[k] / a.steps, 1)} for k, v in rows]
if a.step_ms:
    out.append({'op': 'outside oneDNN (own kernels, loops, JS)', 'ms_per_step': round(a.step_ms - total, 1), 'calls_per_step': None})
if a.json:
    print(json.dumps({'onednn_ms_per_step': round(total, 1), 'rows': out}))
else:
    ref = a.step_ms or total
    for r in out:
        print(f"{r['ms_per_step']:9.1f} ms {100 * r['ms_per_step'] / ref:5.1f}%  {r['op']}  ({r['calls_per_step']} calls)")
    print(f'{total:9.1f} ms in oneDNN per step' + (f' of {a.step_ms} measured' if a.step_ms else ''))
