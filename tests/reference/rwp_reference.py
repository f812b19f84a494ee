#!/usr/bin/env python3
"""Independent PyTorch implementation of docs/algorithms.md, used to check the Rust
core bit for bit. It never calls the Rust code: it reads a *case* (initial
weights and buffers, the batches of every update, the noise seed of every
perturbed task and the hyper-parameters) and writes the final state.

    rwp_reference.py run CASE.safetensors CASE.json OUT.safetensors
    rwp_reference.py run CASE.safetensors CASE.json OUT.safetensors --module NET.pt
    rwp_reference.py bench --method m-arwp --updates 30 --batch-size 256

Floating-point order follows the "fixed order" notes of the Rust modules
`perturb`, `grad` and `optim`, which restate the math of docs/algorithms.md as a
sequence of tensor operations. Both sides call the same ATen kernels in that
order, so on one CPU thread the results agree bit for bit.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


# ----------------------------------------------------------------- the model
def small_cnn(params, buffers, x, bn_mode):
    """conv-BN-ReLU-pool twice, then linear. bn_mode: train | batch | eval."""
    conv1, bn1_w, bn1_b, conv2, bn2_w, bn2_b, fc_w, fc_b = params

    def bn(x, w, b, mean, var):
        if bn_mode == "train":
            return F.batch_norm(x, mean, var, w, b, True, BN_MOMENTUM, BN_EPS)
        if bn_mode == "batch":
            return F.batch_norm(x, None, None, w, b, True, BN_MOMENTUM, BN_EPS)
        return F.batch_norm(x, mean, var, w, b, False, BN_MOMENTUM, BN_EPS)

    x = F.conv2d(x, conv1, None, 1, 1)
    x = F.max_pool2d(F.relu(bn(x, bn1_w, bn1_b, buffers[0], buffers[1])), 2)
    x = F.conv2d(x, conv2, None, 1, 1)
    x = F.max_pool2d(F.relu(bn(x, bn2_w, bn2_b, buffers[2], buffers[3])), 2)
    return F.linear(x.flatten(1), fc_w, fc_b)


class ScriptModel:
    """A TorchScript module (torch.jit.load) trained the way PyTorch users
    train one: its parameters are set to the weights of the pass, its
    floating-point buffers to the running statistics, `train()` / `eval()`
    picks the BatchNorm mode, and the gradient is taken with respect to its
    parameters. A pass with batch statistics only ("batch") runs in train
    mode and leaves the caller's buffers alone."""

    def __init__(self, path):
        # Graph optimisations off, as in the Rust loader: the module runs the
        # eager kernels in program order.
        torch._C._set_graph_executor_optimize(False)
        self.module = torch.jit.load(path)
        self.params = [p for _, p in self.module.named_parameters()]
        self.buffers = [b for _, b in self.module.named_buffers() if b.is_floating_point()]

    def initial(self):
        return [p.detach().clone() for p in self.params], [b.clone() for b in self.buffers]

    def leaves(self, weights):
        with torch.no_grad():
            for p, w in zip(self.params, weights):
                p.copy_(w)
        return self.params

    def __call__(self, params, buffers, x, bn_mode):
        with torch.no_grad():
            for p, w in zip(self.params, params):
                if p is not w:
                    p.copy_(w)
            for b, v in zip(self.buffers, buffers):
                b.copy_(v)
        self.module.train(bn_mode != "eval")
        logits = self.module(x)
        if bn_mode == "train":
            with torch.no_grad():
                for v, b in zip(buffers, self.buffers):
                    v.copy_(b)
        return logits


class EagerModel:
    """An nn.Module run eagerly as a function of the weights of the pass
    (torch.func.functional_call): what a PyTorch user's own training loop
    costs, the benchmarks' reference for the same module as TorchScript."""

    def __init__(self, module):
        self.module = module
        self.param_names = [n for n, _ in module.named_parameters()]
        self.buffer_names = [n for n, b in module.named_buffers() if b.is_floating_point()]

    def initial(self):
        params = dict(self.module.named_parameters())
        buffers = dict(self.module.named_buffers())
        return ([params[n].detach().clone() for n in self.param_names],
                [buffers[n].clone() for n in self.buffer_names])

    def __call__(self, params, buffers, x, bn_mode):
        if bn_mode == "batch":
            buffers = [b.clone() for b in buffers]
        self.module.train(bn_mode != "eval")
        tensors = dict(zip(self.param_names, params))
        tensors.update(zip(self.buffer_names, buffers))
        return torch.func.functional_call(self.module, tensors, (x,))


MODEL = small_cnn


def loss_and_grads(weights, buffers, x, y, bn_mode):
    if isinstance(MODEL, ScriptModel):
        leaves = MODEL.leaves(weights)
    else:
        leaves = [w.detach().requires_grad_() for w in weights]
    loss = F.cross_entropy(MODEL(leaves, buffers, x, bn_mode), y)
    return list(torch.autograd.grad(loss, leaves)), loss.item()


# ----------------------------------------------------------- the perturbation
def row_factors(history, eta):
    out = []
    for f in history:
        row_sum = f.reshape(f.shape[0], -1).sum(dim=1) if f.dim() >= 2 else f
        out.append((1 + eta * row_sum).sqrt())
    return out


@torch.no_grad()
def perturbation(weights, sigma, factors, seed):
    """ε for every tensor, in parameter order, from one generator."""
    torch.manual_seed(seed)
    eps = []
    for i, p in enumerate(weights):
        if p.dim() >= 2:
            std = p.reshape(p.shape[0], -1).norm(dim=1) * sigma
            if factors is not None:
                std = std / factors[i]
            z = torch.randn(p.shape)
            eps.append(z * std.reshape(p.shape[0], *([1] * (p.dim() - 1))))
        else:
            s = sigma * (p.norm().item() + 1e-16)
            e = torch.empty(p.shape).normal_(0, s)
            eps.append(e / factors[i] if factors is not None else e)
    return eps


# --------------------------------------------------------------- the methods
def clean(weights, buffers, x, y):
    updated = [b.clone() for b in buffers]
    grads, loss = loss_and_grads(weights, updated, x, y, "train")
    return grads, updated, loss


def perturbed(weights, buffers, x, y, sigma, factors, seed, keep_bn):
    eps = perturbation(weights, sigma, factors, seed)
    with torch.no_grad():
        w_eps = [w + e for w, e in zip(weights, eps)]
    if keep_bn:
        updated = [b.clone() for b in buffers]
        grads, loss = loss_and_grads(w_eps, updated, x, y, "train")
        return grads, updated, loss
    grads, loss = loss_and_grads(w_eps, buffers, x, y, "batch")
    return grads, None, loss


def sam(weights, buffers, x, y, rho):
    updated = [b.clone() for b in buffers]
    g1, loss = loss_and_grads(weights, updated, x, y, "train")
    with torch.no_grad():
        global_norm = torch.stack([g.norm() for g in g1]).norm().item()
        scale = rho / (global_norm + 1e-12)
        w_adv = [w + g * scale for w, g in zip(weights, g1)]
    g2, _ = loss_and_grads(w_adv, buffers, x, y, "batch")
    return g2, updated, loss


def shard_mean(tensors):
    acc = tensors[0]
    for t in tensors[1:]:
        acc = acc + t
    return acc / len(tensors)


# ------------------------------------------------------------- the schedules
def lr_at(cfg, t):
    upe, planned = cfg["updates_per_epoch"], cfg["planned_updates"]
    epoch, epochs = t // upe, planned // upe
    kind = cfg["lr_schedule"]["kind"]
    if kind == "constant":
        lr = cfg["lr"]
    elif kind == "step":
        passed = sum(1 for m in cfg["lr_schedule"]["milestones"] if m <= epoch)
        lr = cfg["lr"] * cfg["lr_schedule"]["gamma"] ** passed
    elif kind == "cosine-per-update":
        lr = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * t / planned))
    elif kind == "cosine-per-epoch":
        lr = cfg["lr"] * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    else:
        raise ValueError(kind)
    warmup = cfg["warmup_updates"]
    return lr * (t + 1) / warmup if t < warmup else lr


def sigma_at(cfg, t):
    s = cfg["sigma_schedule"]
    if s["kind"] == "constant":
        return cfg["sigma"]
    return cfg["sigma"] * (1 + s["inc"] * (1 - math.cos(math.pi * t / cfg["planned_updates"])) / 2)


# ----------------------------------------------------------------- training
def train(cfg, weights, buffers, batches):
    """batches(t) -> {"clean": [(x, y, seed)], "perturbed": [...]} per shard."""
    method = cfg["method"]
    uses_clean = method in ("sgd", "m-rwp", "m-arwp")
    uses_pert = method in ("rwp", "arwp", "m-rwp", "m-arwp")
    adaptive = method in ("arwp", "m-arwp")
    keep_bn_from_pert = uses_pert and not uses_clean
    mu, wd, lam = cfg["momentum"], cfg["weight_decay"], cfg["lambda"]
    momentum, history = None, None
    for t in range(cfg["updates"]):
        shards = batches(t)
        factors = row_factors(history, cfg["eta"]) if adaptive and history is not None else None
        clean_grads, clean_bufs, pert_grads, pert_bufs = [], [], [], []
        for x, y, _ in shards["clean"]:
            if method == "sam":
                g, b, _ = sam(weights, buffers, x, y, cfg["rho"])
            else:
                g, b, _ = clean(weights, buffers, x, y)
            clean_grads.append(g)
            clean_bufs.append(b)
        for x, y, seed in shards["perturbed"]:
            g, b, _ = perturbed(weights, buffers, x, y, sigma_at(cfg, t), factors, seed, keep_bn_from_pert)
            pert_grads.append(g)
            pert_bufs.append(b)
        with torch.no_grad():
            gc = [shard_mean([s[i] for s in clean_grads]) for i in range(len(weights))] if clean_grads else None
            gp = [shard_mean([s[i] for s in pert_grads]) for i in range(len(weights))] if pert_grads else None
            if gc is not None and gp is not None:
                g = [a * (1 - lam) + b * lam for a, b in zip(gc, gp)]
            else:
                g = gc if gc is not None else gp
            if adaptive:
                history = [x * x for x in gp] if history is None else [f * cfg["beta"] + x * x for f, x in zip(history, gp)]
            d = [gi + w * wd for gi, w in zip(g, weights)]
            if mu > 0:
                momentum = [x.clone() for x in d] if momentum is None else [b * mu + x for b, x in zip(momentum, d)]
                d = [x + b * mu for x, b in zip(d, momentum)] if cfg["nesterov"] else momentum
            lr = lr_at(cfg, t)
            weights = [w - x * lr for w, x in zip(weights, d)]
            if clean_bufs:
                buffers = [shard_mean([s[i] for s in clean_bufs]) for i in range(len(buffers))]
            elif keep_bn_from_pert:
                buffers = [shard_mean([s[i] for s in pert_bufs]) for i in range(len(buffers))]
    return weights, buffers, momentum, history


def run_case(args):
    global MODEL
    torch.set_num_threads(1)
    cfg = json.load(open(args.config))
    case = load_file(args.case)
    n_w, n_b = cfg["num_weights"], cfg["num_buffers"]
    if args.module:
        # The initial state is the module file's own, not the case's.
        MODEL = ScriptModel(args.module)
        weights, buffers = MODEL.initial()
        if (len(weights), len(buffers)) != (n_w, n_b):
            sys.exit(f"the module has {len(weights)} parameters and {len(buffers)} float buffers; "
                     f"the case has {n_w} and {n_b}")
    else:
        weights = [case[f"init.w.{i}"] for i in range(n_w)]
        buffers = [case[f"init.b.{i}"] for i in range(n_b)]

    def batches(t):
        out = {"clean": [], "perturbed": []}
        for task in cfg["steps"][t]:
            key = f"step{t}.{task['role']}{task['shard']}"
            out["clean" if task["role"] in ("clean", "sam") else "perturbed"].append(
                (case[key + ".x"], case[key + ".y"], task.get("noise_seed")))
        return out

    weights, buffers, momentum, history = train(cfg, weights, buffers, batches)
    out = {f"w.{i}": w.contiguous() for i, w in enumerate(weights)}
    out.update({f"b.{i}": b.contiguous() for i, b in enumerate(buffers)})
    if momentum is not None:
        out.update({f"m.{i}": m.contiguous() for i, m in enumerate(momentum)})
    if history is not None:
        out.update({f"F.{i}": f.contiguous() for i, f in enumerate(history)})
    save_file(out, args.out)


def bench(args):
    """Times updates of the small CNN on random data, the way the local
    trainer runs them (one process, shards in sequence). With --eager-module,
    the same architecture as a user's nn.Module run eagerly."""
    global MODEL
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c, h, w, classes, b = 3, 16, 16, 10, args.batch_size
    if args.eager_module:
        from script_models import SmallCnn
        MODEL = EagerModel(SmallCnn(c, classes))
        weights, buffers = MODEL.initial()
    else:
        shapes = [(32, c, 3, 3), (32,), (32,), (64, 32, 3, 3), (64,), (64,), (classes, 64 * (h // 4) * (w // 4)), (classes,)]
        weights = [torch.randn(s) * 0.1 if len(s) > 1 else torch.ones(s) for s in shapes]
        buffers = [torch.zeros(32), torch.ones(32), torch.zeros(64), torch.ones(64)]
    n_batches = 8
    data = [(torch.randn(b, c, h, w), torch.randint(0, classes, (b,))) for _ in range(n_batches)]
    cfg = dict(method=args.method, momentum=0.9, weight_decay=1e-3, nesterov=False, eta=0.1, beta=0.99, rho=0.05,
               sigma=0.015, sigma_schedule={"kind": "constant"}, lr=0.1, lr_schedule={"kind": "constant"},
               warmup_updates=0, updates_per_epoch=1, planned_updates=10**9, updates=None)
    cfg["lambda"] = 0.5
    uses_clean = args.method in ("sgd", "sam", "m-rwp", "m-arwp")
    uses_pert = args.method in ("rwp", "arwp", "m-rwp", "m-arwp")

    def batches(t):
        x, y = data[t % n_batches]
        xp, yp = data[(t + 1) % n_batches]
        return {"clean": [(x, y, None)] if uses_clean else [], "perturbed": [(xp, yp, t)] if uses_pert else []}

    cfg["updates"] = args.warmup
    train(cfg, weights, buffers, batches)
    cfg["updates"] = args.updates
    start = time.perf_counter()
    train(cfg, weights, buffers, batches)
    elapsed = time.perf_counter() - start
    print(json.dumps({"method": args.method, "updates": args.updates, "ms_per_update": 1000 * elapsed / args.updates}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("case")
    r.add_argument("config")
    r.add_argument("out")
    r.add_argument("--module", help="train this TorchScript file instead of the built-in small CNN")
    b = sub.add_parser("bench")
    b.add_argument("--method", default="m-arwp")
    b.add_argument("--updates", type=int, default=30)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--threads", type=int, default=0)
    b.add_argument("--eager-module", action="store_true",
                   help="time script_models.SmallCnn, an nn.Module, in eager mode (functional_call)")
    args = parser.parse_args()
    run_case(args) if args.command == "run" else bench(args)


if __name__ == "__main__":
    sys.exit(main())
