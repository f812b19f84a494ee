#!/usr/bin/env python3
"""Writes the TorchScript files the tests train and refuse, the way a user
makes one: define a torch.nn.Module, `torch.jit.script(model).save(path)`.

    script_models.py KIND OUT.pt [--seed N] [--classes N] [--channels N]

KIND:
  cnn-bn      conv-BN-ReLU-pool twice, then linear (16×16 inputs)
  mlp         flatten, linear-ReLU-linear; no BatchNorm
  no-params   a module with nothing to train
  not-script  random bytes, not a TorchScript archive
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["cnn-bn", "mlp", "no-params", "not-script"])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.kind == "not-script":
        with open(args.out, "wb") as f:
            f.write(os.urandom(4096))
        return
    model = {"cnn-bn": CnnBn, "mlp": Mlp}.get(args.kind)
    module = model(args.channels, args.classes) if model else NoParams()
    torch.jit.script(module).save(args.out)


if __name__ == "__main__":
    main()
