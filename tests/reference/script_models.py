#!/usr/bin/env python3
"""Writes the TorchScript files the tests train and refuse, the way a user
makes one: define a torch.nn.Module, `torch.jit.script(model).save(path)`.

    script_models.py KIND OUT.pt [--seed N] [--classes N] [--channels N]

KIND:
  cnn-bn      conv-BN-ReLU-pool twice, then linear (16×16 inputs)
  small-cnn   the built-in small CNN's architecture (32 and 64 channels)
  mlp         flatten, linear-ReLU-linear; no BatchNorm
  no-params   a module with nothing to train
  not-script  random bytes, not a TorchScript archive

Attacks (what an upload must never get away with; --target names the file
they try to write or read):
  write-in-setstate   writes --target while being loaded (__setstate__)
  write-in-forward    writes --target in forward
  read-through-shape  returns a tensor whose shape spells --target's bytes
  read-into-buffer    copies --target's bytes into a buffer (then exported)
  loop-in-setstate    never finishes loading
  loop-in-training    forward never returns in training mode (evaluation,
                      which the shape check uses, works)
  alloc-in-training   forward allocates 2 GiB in training mode
  quantized           a quantized convolution: a custom C++ class and
                      operators from outside aten
"""
import argparse
import os

import torch
from torch import nn


class CnnBn(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class SmallCnn(nn.Module):
    """The built-in small CNN's architecture, as a user would write it: the
    benchmarks time it as TorchScript and in eager PyTorch."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class Mlp(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.fc1 = nn.Linear(channels * 16 * 16, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class NoParams(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


from typing import List, Tuple


class Linear768(nn.Module):
    """A linear model of 3 × 16 × 16 inputs, the base of every attack."""

    def __init__(self, classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(classes, 768))
        self.bias = nn.Parameter(torch.zeros(classes))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.flatten(1), self.weight, self.bias)


class WriteInSetstate(Linear768):
    def __init__(self, classes: int, target: str):
        super().__init__(classes)
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, torch.Tensor, str, bool]:
        return (self.weight, self.bias, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, torch.Tensor, str, bool]) -> None:
        self.target = state[2]
        self.training = state[3]
        written = torch.from_file(self.target, True, 5, dtype=torch.uint8)
        written.copy_(torch.tensor([112, 119, 110, 101, 100], dtype=torch.uint8))
        self.weight = state[0]
        self.bias = state[1] + written.float().sum() * 0


class WriteInForward(Linear768):
    def __init__(self, classes: int, target: str):
        super().__init__(classes)
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.target, True, 5, dtype=torch.uint8)
        written.copy_(torch.tensor([112, 119, 110, 101, 100], dtype=torch.uint8))
        return self.logits(x) + written.float().sum() * 0


class ReadThroughShape(Linear768):
    def __init__(self, classes: int, target: str):
        super().__init__(classes)
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.target, False, 16, dtype=torch.uint8)
        shape: List[int] = [0]
        for i in range(data.numel()):
            shape.append(int(data[i]))
        strides: List[int] = [1 for _ in shape]
        return torch.empty([0]).as_strided(shape, strides)


class ReadIntoBuffer(Linear768):
    def __init__(self, classes: int, target: str):
        super().__init__(classes)
        self.target = target
        self.register_buffer("stolen", torch.zeros(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stolen.copy_(torch.from_file(self.target, False, 16, dtype=torch.uint8).float())
        return self.logits(x)


class LoopInSetstate(Linear768):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, torch.Tensor, bool]:
        return (self.weight, self.bias, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, torch.Tensor, bool]) -> None:
        n = 0
        while n >= 0:
            n = (n + 1) % 1000
        self.training = state[2]
        self.weight = state[0]
        self.bias = state[1] + float(n)


class LoopInTraining(Linear768):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = 0
        if self.training:
            while n >= 0:
                n = (n + 1) % 1000
        return self.logits(x) + float(n)


class AllocInTraining(Linear768):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits(x)
        if self.training:
            big = torch.ones([1 << 29])
            out = out + big[-1] * 0
        return out


def quantized(classes: int) -> torch.jit.ScriptModule:
    from torch.ao.nn import quantized as nnq

    class Quantized(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nnq.Conv2d(3, 3, 1)
            self.head = nn.Linear(768, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8)
            return self.head(self.conv(q).dequantize().flatten(1))

    return torch.jit.script(Quantized())


ATTACKS = {
    "write-in-setstate": lambda c, t: WriteInSetstate(c, t),
    "write-in-forward": lambda c, t: WriteInForward(c, t),
    "read-through-shape": lambda c, t: ReadThroughShape(c, t),
    "read-into-buffer": lambda c, t: ReadIntoBuffer(c, t),
    "loop-in-setstate": lambda c, t: LoopInSetstate(c),
    "loop-in-training": lambda c, t: LoopInTraining(c),
    "alloc-in-training": lambda c, t: AllocInTraining(c),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["cnn-bn", "small-cnn", "mlp", "no-params", "not-script", "quantized", *ATTACKS])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--target", default="/tmp/rwp-attack-target")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.kind == "not-script":
        with open(args.out, "wb") as f:
            f.write(os.urandom(4096))
        return
    if args.kind in ATTACKS:
        torch.jit.script(ATTACKS[args.kind](args.classes, args.target)).save(args.out)
        return
    if args.kind == "quantized":
        quantized(args.classes).save(args.out)
        return
    model = {"cnn-bn": CnnBn, "small-cnn": SmallCnn, "mlp": Mlp}.get(args.kind)
    module = model(args.channels, args.classes) if model else NoParams()
    torch.jit.script(module).save(args.out)


if __name__ == "__main__":
    main()
