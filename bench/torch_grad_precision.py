"""How well f32 computes a ResNet-20's first gradients: PyTorch's f32 gradients at 1 and at 2 threads
against float64 on the same f32 weights and inputs (the oracle), per tensor max |a - b| / max |b|.

The context for issue #15's bound (BENCHMARKS.md, "Data-parallel equivalence"): from scratch the
BatchNorm biases are 0, so "within 1e-4 of each tensor's largest entry" after a step asks their
gradients to agree to 1e-4. Then float64 again, on inputs moved by 1e-7 relative (5 draws) (about
f32's rounding): how much the exact gradient itself moves, whatever the arithmetic. Run by Debian's interpreter: /usr/bin/python3 bench/torch_grad_precision.py
Prints one JSON object. The CIFAR ResNet-20 of scripts/fixtures/models_parity.py (option-A shortcuts),
1x28x28 inputs, batch 128, random weights and inputs (seed 0), training mode.
"""
import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0] + "/scripts/fixtures")
from models_parity import CifarResNet  # noqa: E402

torch.manual_seed(0)
m32 = CifarResNet(3, in_channels=1).train()
x = torch.randn(128, 1, 28, 28)
y = torch.randint(0, 10, (128,))
m64 = CifarResNet(3, in_channels=1).double().train()
m64.load_state_dict({k: v.double() for k, v in m32.state_dict().items()})


def grads(m, inp, threads):
    torch.set_num_threads(threads)
    m.zero_grad()
    F.cross_entropy(m(inp), y).backward()
    return {k: p.grad.detach().double().clone() for k, p in m.named_parameters()}


g64 = grads(m64, x.double(), 1)
g1 = grads(m32, x, 1)
g2 = grads(m32, x, 2)
moved = []
for seed in range(1, 6):
    torch.manual_seed(seed)
    moved.append(grads(m64, x.double() * (1 + 1e-7 * torch.randn(x.shape, dtype=torch.float64)), 1))


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


rows = {k: {"f32_1thread_vs_f64": rel(g1[k], g64[k]), "f32_2threads_vs_f64": rel(g2[k], g64[k]),
            "f32_1_vs_2_threads": rel(g1[k], g2[k]), "f64_input_moved_1e-7": [rel(gp[k], g64[k]) for gp in moved]} for k in g64}
worst = max(rows, key=lambda k: rows[k]["f32_1thread_vs_f64"])
bn_bias = [k for k in rows if k.endswith("bias") and ".bn" in k or k == "bn1.bias"]
print(json.dumps({
    "torch": torch.__version__,
    "worst": worst, **{f"worst_{k}": v for k, v in rows[worst].items()},
    "bn_bias_worst_f32_vs_f64": max(rows[k]["f32_1thread_vs_f64"] for k in bn_bias),
    "bn_bias_median_f32_vs_f64": sorted(rows[k]["f32_1thread_vs_f64"] for k in bn_bias)[len(bn_bias) // 2],
    "stem_conv_f32_vs_f64": rows["conv1.weight"]["f32_1thread_vs_f64"],
    "worst_f64_input_moved_1e-7_per_draw": [max(r["f64_input_moved_1e-7"][i] for r in rows.values()) for i in range(len(moved))],
    "tensors_over_1e-4": sum(1 for r in rows.values() if r["f32_1thread_vs_f64"] > 1e-4),
    "tensors": len(rows),
    "per_tensor": rows,
}))
