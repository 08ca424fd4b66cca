"""PyTorch side of bench/layers.ts: forward + backward of conv -> batch_norm (training) -> relu per layer.

Reads the layer list (JSON) from the file named on the command line, prints one JSON object.
Run by Debian's interpreter (/usr/bin/python3, which has python3-torch).
"""
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
layout = spec.get("torch_layout", "nchw")
results = []
for layer in spec["layers"]:
    n, c, h, w = layer["input"]
    oc, k, s, p, g = layer["out"], layer["kernel"], layer["stride"], layer["padding"], layer["groups"]
    mf = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = torch.randn(n, c, h, w).to(memory_format=mf).requires_grad_(layer["input_grad"])
    weight = (torch.randn(oc, c // g, k, k) * 0.05).to(memory_format=mf).requires_grad_(True)
    gamma = torch.ones(oc, requires_grad=True)
    beta = torch.zeros(oc, requires_grad=True)
    rm, rv = torch.zeros(oc), torch.ones(oc)

    def step():
        y = F.relu(F.batch_norm(F.conv2d(x, weight, None, s, p, 1, g), rm, rv, gamma, beta, training=True))
        if step.dy is None:
            step.dy = torch.randn_like(y)
        y.backward(step.dy)
        for t in (x, weight, gamma, beta):
            t.grad = None
    step.dy = None

    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    results.append({"name": layer["name"], "ms": statistics.median(times)})
print(json.dumps({"engine": f"pytorch {torch.__version__} ({layout})", "threads": torch.get_num_threads(), "layers": results}))
