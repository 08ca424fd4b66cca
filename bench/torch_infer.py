"""PyTorch side of bench/infer.ts: torchvision eval-mode inference, median ms of timed runs.

Reads {"model", "batch", "input": [C,H,W], "threads", "warmup", "runs", "layout"} from the JSON file
named on the command line and prints one JSON object. Random weights (timing does not depend on
them). Run by Debian's interpreter (/usr/bin/python3, which has python3-torch and torchvision).
"""
import json
import statistics
import sys
import time

import torch
import torchvision

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
model = getattr(torchvision.models, spec["model"])().eval()
c, h, w = spec["input"]
x = torch.rand(spec["batch"], c, h, w)
if spec.get("layout") == "nhwc":
    model = model.to(memory_format=torch.channels_last)
    x = x.to(memory_format=torch.channels_last)
times = []
with torch.no_grad():
    for i in range(spec["warmup"] + spec["runs"]):
        t0 = time.perf_counter()
        model(x)
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
ms = statistics.median(times)
print(json.dumps({
    "engine": f"pytorch {torch.__version__} eval ({spec.get('layout', 'nchw')})", "threads": torch.get_num_threads(),
    "ms_per_batch": ms, "ms_per_image": ms / spec["batch"],
}))
