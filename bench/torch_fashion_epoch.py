"""PyTorch side of bench/fashion_epoch.ts: ResNet-20 (1 input channel) on Fashion-MNIST, the recipe of
REFERENCE.md / `residual train` defaults: batch 128, SGD Nesterov momentum 0.9, weight decay 5e-4,
one-cycle lr peaking at 0.1 after 15%, pad-2 random crop + horizontal flip per sample, normalization.

    /usr/bin/python3 bench/torch_fashion_epoch.py --threads 2 --epochs 1 [--total-epochs 1]

Prints one JSON line per epoch (train_loss, test_acc, epoch_s), timing training only (not the test pass).
"""
import argparse
import gzip
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0] + "/scripts/fixtures")
from models_parity import CifarResNet  # noqa: E402  the paper's ResNet-20 with option-A shortcuts

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--epochs", type=int, default=1, help="epochs to run")
p.add_argument("--total-epochs", type=int, default=None, help="epochs the schedule spans (default: --epochs)")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
rng = np.random.default_rng(a.seed)

root = "/usr/share/datasets/fashion-mnist/"
def idx(name, offset):
    with gzip.open(root + name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)
xtr = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
xte = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
mean, std = 0.2860, 0.3530
norm = lambda x: (torch.from_numpy(x.astype(np.float32)) / 255 - mean) / std

model = CifarResNet(3, num_classes=10, in_channels=1)
for m in model.modules():
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
batch = 128
steps = (len(xtr) + batch - 1) // batch
total = a.total_epochs or a.epochs
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps * total, pct_start=0.15)

def augment(xb):
    n = len(xb)
    padded = np.pad(xb, ((0, 0), (0, 0), (2, 2), (2, 2)))
    out = np.empty_like(xb)
    oy, ox = rng.integers(0, 5, n), rng.integers(0, 5, n)
    flip = rng.random(n) < 0.5
    for i in range(n):
        c = padded[i, :, oy[i]:oy[i] + 28, ox[i]:ox[i] + 28]
        out[i] = c[:, :, ::-1] if flip[i] else c
    return out

for epoch in range(a.epochs):
    model.train()
    order = rng.permutation(len(xtr))
    t0 = time.perf_counter()
    loss_sum = 0.0
    for s in range(steps):
        ix = order[s * batch:(s + 1) * batch]
        x, y = norm(augment(xtr[ix])), ytr[ix]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss) * len(ix)
    epoch_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(xte), 256):
            correct += int((model(norm(xte[s:s + 256])).argmax(1) == yte[s:s + 256]).sum())
    print(json.dumps({"engine": f"pytorch {torch.__version__}", "threads": torch.get_num_threads(), "epoch": epoch + 1,
                      "train_loss": loss_sum / len(xtr), "test_acc": correct / len(xte), "epoch_s": epoch_s}), flush=True)
