#!/usr/bin/env python3
"""Times `torch.optim.SGD(momentum=0.9, weight_decay=1e-3).step()` on the
parameters of the CIFAR ResNet-18 (11,173,962 parameters in 62 tensors) with
random gradients: the PyTorch side of `bench-aggregation`.

    optimizer_step.py --updates 20 --warmup 3 --threads 1

Reports the mean ms per step after the warm-up (momentum buffers exist by
then, as in steady training), for PyTorch's default implementation on this
device and for `foreach=True`. The last stdout line is one JSON object.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_mrwp import ResNet18  # noqa: E402  (the same architecture as the Rust side)


def ms_per_step(params, foreach, updates, warmup):
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=foreach)
    for _ in range(warmup):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(updates):
        optimizer.step()
    return 1000 * (time.perf_counter() - start) / updates


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=int(env("UPDATES", "20")))
    parser.add_argument("--warmup", type=int, default=int(env("WARMUP", "3")))
    parser.add_argument("--threads", type=int, default=int(env("THREADS", "1")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = [p.detach().clone().requires_grad_() for p in ResNet18().parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    default = ms_per_step(params, None, args.updates, args.warmup)
    foreach = ms_per_step(params, True, args.updates, args.warmup)
    print(json.dumps({
        "benchmark": "torch-sgd-step",
        "parameters": sum(p.numel() for p in params),
        "tensors": len(params),
        "threads": args.threads,
        "warmup": args.warmup,
        "updates": args.updates,
        "ms_per_step": round(default, 3),
        "ms_per_step_foreach": round(foreach, 3),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    sys.exit(main())
