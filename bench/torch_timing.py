"""Timing shared by the PyTorch sides of the benchmarks (torch_infer.py, torch_train_step.py)."""
import json
import statistics
import time

import torch


def report(spec, step, mode, model, x):
    """Runs `step` warmup + runs times, then prints the median as the benchmarks' JSON line.

    `layout` "nhwc" puts the model and input in channels_last first; returns nothing."""
    if spec.get("layout") == "nhwc":
        model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    times = []
    for i in range(spec["warmup"] + spec["runs"]):
        t0 = time.perf_counter()
        step(model, x)
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - t0) * 1000)
    ms = statistics.median(times)
    print(json.dumps({
        "engine": f"pytorch {torch.__version__} {mode} ({spec.get('layout', 'nchw')})", "threads": torch.get_num_threads(),
        "ms_per_batch": ms, "ms_per_image": ms / spec["batch"],
    }))
