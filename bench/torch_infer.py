"""PyTorch side of bench/infer.ts: torchvision eval-mode inference, median ms of timed runs.

Reads {"model", "batch", "input": [C,H,W], "threads", "warmup", "runs", "layout"} from the JSON file
named on the command line and prints one JSON object. Random weights (timing does not depend on
them). Run by Debian's interpreter (/usr/bin/python3, which has python3-torch and torchvision).
"""
import json
import sys

import torch
import torchvision

from torch_timing import report

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
model = getattr(torchvision.models, spec["model"])().eval()
c, h, w = spec["input"]
with torch.no_grad():
    report(spec, lambda m, x: m(x), "eval", model, torch.rand(spec["batch"], c, h, w))
