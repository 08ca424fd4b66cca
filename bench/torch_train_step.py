"""PyTorch side of bench/train_step.ts: one training step (forward, cross-entropy, backward, SGD with
momentum), median ms of timed steps.

Reads {"model", "batch", "input": [C,H,W], "threads", "warmup", "runs", "layout", "dtype"} from the JSON file
named on the command line and prints one JSON object. torchvision's ImageNet models, or the CIFAR
ResNet-6n+2 of scripts/fixtures/models_parity.py ("resnet20", "resnet56", ...). Random weights and
inputs (timing does not depend on them). Run by Debian's interpreter (/usr/bin/python3).
"dtype": "bf16" runs forward and loss under torch.autocast("cpu", dtype=torch.bfloat16) (AMP with bf16,
no GradScaler: bf16 needs no loss scaling), the baseline for `residual bench --mode train --dtype bf16`.
"""
import json
import sys

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0] + "/scripts/fixtures")
from models_parity import CifarResNet  # noqa: E402  the paper's CIFAR nets, option-A shortcuts
from torch_timing import report  # noqa: E402

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
name = spec["model"]
c, h, w = spec["input"]
if hasattr(torchvision.models, name):
    model = getattr(torchvision.models, name)()
else:
    depth = int(name.removeprefix("resnet"))
    model = CifarResNet((depth - 2) // 6, in_channels=c)
model.train()
y = torch.randint(0, 10, (spec["batch"],))
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


amp = spec.get("dtype", "f32") == "bf16"


def step(m, x):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(m(x), y)
    loss.backward()
    loss.item()
    opt.step()
    opt.zero_grad()


report(spec, step, "train", model, torch.rand(spec["batch"], c, h, w))
