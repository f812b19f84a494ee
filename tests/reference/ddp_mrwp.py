#!/usr/bin/env python3
"""Parallel m-RWP the way the papers' reference code runs it: PyTorch DDP with
the gloo backend, two processes on 127.0.0.1. Rank 0 computes the clean
gradient at w, rank 1 the perturbed gradient at w + ε (filter-wise ε,
docs/algorithms.md); each scales its loss by 2(1 − λ) or 2λ so that DDP's gradient
all-reduce (an average) yields (1 − λ)·g_clean + λ·g_pert; DDP broadcasts the
BN running statistics from rank 0 (the clean rank) before every forward pass;
both ranks then take the same SGD step. Random inputs of the datasets' shapes:
only the time matters.

    ddp_mrwp.py --model small-cnn --batch-size 256 --updates 30 --warmup 3 --threads 1
    ddp_mrwp.py --model resnet18 --batch-size 32 --updates 5 --warmup 1   # seconds per update on CPU
    ddp_mrwp.py --device cuda ...                                          # both processes on GPU 0 (gloo)

Flags default to the environment (MODEL, BATCH, UPDATES, WARMUP, THREADS,
ROUNDS, DEVICE). Reports ms per update after the warm-up, measured on rank 0
between barriers: the mean over UPDATES updates (with ROUNDS > 1, the best of
that many such means). The last stdout line is one JSON object.
"""
import argparse
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

SIGMA = 0.01  # m-RWP reference
LAMBDA = 0.5
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-3
CLASSES = 10


class SmallCnn(nn.Module):
    """crates/rwp-core/src/model/arch.rs `small_cnn`, same parameter order."""

    def __init__(self, channels=3, size=16, classes=CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * (size // 4) * (size // 4), classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3×3 stem, no stem pooling): arch.rs `resnet18`."""

    def __init__(self, classes=CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


MODELS = {"small-cnn": (SmallCnn, (3, 16, 16)), "resnet18": (ResNet18, (3, 32, 32))}


@torch.no_grad()
def perturbation(params, sigma):
    """Filter-wise ε (docs/algorithms.md): σ·‖row‖ per output row for ≥2-D tensors,
    σ·(‖p‖ + 1e-16) for 1-D ones, in parameter order."""
    eps = []
    for p in params:
        if p.dim() >= 2:
            std = p.reshape(p.shape[0], -1).norm(dim=1) * sigma
            eps.append(torch.randn(p.shape, device=p.device) * std.reshape(p.shape[0], *([1] * (p.dim() - 1))))
        else:
            eps.append(torch.empty(p.shape, device=p.device).normal_(0, sigma * (p.norm().item() + 1e-16)))
    return eps


def worker(rank, args, port, results):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    build, shape = MODELS[args.model]
    torch.manual_seed(0)  # the same initial weights on both ranks
    model = build().to(device)
    clean = rank == 0
    if not clean:
        # The perturbed pass uses batch statistics and leaves the running ones alone.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.0
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=True)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    params = list(model.parameters())
    # Different batches for the two ranks (B_c ≠ B_p), a few of each to cycle through.
    torch.manual_seed(1 + rank)
    n = args.batch_size
    batches = [(torch.randn(n, *shape, device=device), torch.randint(0, CLASSES, (n,), device=device)) for _ in "abcd"]
    scale = 2 * (1 - LAMBDA) if clean else 2 * LAMBDA
    torch.manual_seed(100 + rank)

    def update(t):
        x, y = batches[t % len(batches)]
        eps = None
        if not clean:
            eps = perturbation(params, SIGMA)
            with torch.no_grad():
                for p, e in zip(params, eps):
                    p.add_(e)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y) * scale
        loss.backward()  # DDP averages the scaled gradients of both ranks here
        if eps is not None:
            # Back to w the reference code's way, w + ε − ε (may differ from w in the last bit).
            with torch.no_grad():
                for p, e in zip(params, eps):
                    p.sub_(e)
        optimizer.step()

    def settled():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()

    for t in range(args.warmup):
        update(t)
    rounds = []
    t = args.warmup
    for _ in range(args.rounds):
        settled()
        start = time.perf_counter()
        for _ in range(args.updates):
            update(t)
            t += 1
        settled()
        rounds.append(1000 * (time.perf_counter() - start) / args.updates)
    if rank == 0:
        results.put({"rounds_ms": rounds, "parameters": sum(p.numel() for p in params)})
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default=env("MODEL", "small-cnn"))
    parser.add_argument("--batch-size", type=int, default=int(env("BATCH", "256")), help="per process")
    parser.add_argument("--updates", type=int, default=int(env("UPDATES", "30")))
    parser.add_argument("--warmup", type=int, default=int(env("WARMUP", "3")))
    parser.add_argument("--threads", type=int, default=int(env("THREADS", "1")), help="per process")
    parser.add_argument("--rounds", type=int, default=int(env("ROUNDS", "1")))
    parser.add_argument("--device", default=env("DEVICE", "cpu"), help="cpu, cuda or cuda:N (both processes)")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.spawn(worker, args=(args, free_port(), results), nprocs=2, join=True)
    out = results.get()
    rounds = out["rounds_ms"]
    print(json.dumps({
        "benchmark": "ddp-mrwp",
        "model": args.model,
        "parameters": out["parameters"],
        "processes": 2,
        "backend": "gloo",
        "batch_size_per_process": args.batch_size,
        "threads_per_process": args.threads,
        "device": args.device,
        "sigma": SIGMA,
        "lambda": LAMBDA,
        "warmup": args.warmup,
        "updates_per_round": args.updates,
        "rounds": args.rounds,
        "ms_per_update_rounds": [round(r, 3) for r in rounds],
        "ms_per_update": round(min(rounds), 3),
        "statistic": "mean over the updates of a round, on rank 0 between barriers; the best round",
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    sys.exit(main())
