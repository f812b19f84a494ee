"""torchvision's ResNet-50 against rwp-core's (tests/resnet50_matches_torchvision.rs).

Reads rwp-core's initial weights and BatchNorm statistics, an input batch
and rwp-core's results from CASE (safetensors), loads the weights into
torchvision.models.resnet50(num_classes=10) by name, and checks on one CPU
thread that the parameter names, order and shapes are torchvision's and that
the training-mode logits, the loss's gradients, the updated running
statistics and the evaluation-mode logits are bit-identical. Prints one line
per mismatch and exits 1 if there is any.
"""

import sys

import torch
import torchvision
from safetensors.torch import load_file

torch.set_num_threads(1)
case = load_file(sys.argv[1])
model = torchvision.models.resnet50(num_classes=10)
problems = []

ours = [k[len("param.") :] for k in case if k.startswith("param.")]
theirs = [name for name, _ in model.named_parameters()]
if sorted(ours) != sorted(theirs):
    problems.append(f"parameter names differ: only ours {set(ours) - set(theirs)}, only torchvision's {set(theirs) - set(ours)}")
# rwp-core's declaration order, from keys `order.NNNN.name`.
order = [k.split(".", 2)[2] for k in sorted(k for k in case if k.startswith("order."))]
state = {}
for name, tensor in model.named_parameters():
    ours_t = case.get("param." + name)
    if ours_t is None:
        continue
    if tuple(ours_t.shape) != tuple(tensor.shape):
        problems.append(f"{name}: shape {tuple(ours_t.shape)}, torchvision {tuple(tensor.shape)}")
    state[name] = ours_t
for name, tensor in model.named_buffers():
    if name.endswith("num_batches_tracked"):
        continue
    state[name] = case["buffer." + name]
missing, unexpected = model.load_state_dict(state, strict=False)
missing = [m for m in missing if not m.endswith("num_batches_tracked")]
if missing or unexpected:
    problems.append(f"load_state_dict: missing {missing}, unexpected {unexpected}")
if sum(p.numel() for p in model.parameters()) != int(case["count"].item()):
    problems.append(f"parameter count: torchvision {sum(p.numel() for p in model.parameters())}, ours {int(case['count'].item())}")
if order != theirs:
    problems.append("parameters are not declared in torchvision's order")

x, y = case["input"], case["labels"].long()
model.train()
logits = model(x)
loss = torch.nn.functional.cross_entropy(logits, y)
grads = torch.autograd.grad(loss, list(model.parameters()))


def same(what, a, b):
    if not torch.equal(a, b):
        problems.append(f"{what}: not bit-identical (max difference {(a - b).abs().max().item():.3g})")


same("train-mode logits", logits, case["train_logits"])
for (name, _), g in zip(model.named_parameters(), grads):
    same(f"gradient of {name}", g, case["grad." + name])
for name, buf in model.named_buffers():
    if not name.endswith("num_batches_tracked"):
        same(f"running statistic {name}", buf, case["updated." + name])
model.eval()
with torch.no_grad():
    same("eval-mode logits", model(x), case["eval_logits"])

for p in problems:
    print(p)
print(f"torchvision {torchvision.__version__}: {len(problems)} problems")
sys.exit(1 if problems else 0)
