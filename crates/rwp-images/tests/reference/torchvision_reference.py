"""torchvision's side of rwp-images' reference tests (tests/torchvision.rs).

    transforms CASES.json OUT_DIR   each case's output through torchvision, twice:
                                    OUT_DIR/<i>.pil.f32 with PIL images (uint8 between and
                                    after the resize passes, what ImageFolder pipelines do) and
                                    OUT_DIR/<i>.float.f32 with float tensors (antialias=True)
    jpegs IMAGE.png OUT_DIR         the image saved by PIL as JPEGs of several kinds, and PIL's
                                    decode of each (raw RGB); prints them as JSON
    crop-params WIDTH HEIGHT N      N draws of RandomResizedCrop.get_params (scale (0.08, 1),
                                    ratio (3/4, 4/3)) for a WIDTH x HEIGHT image; prints
                                    [[top, left, height, width], ...]

A case is {"image": path, "size": s} and either "kind": "crop" with "top", "left", "height",
"width" and "flip" (RandomResizedCrop + RandomHorizontalFlip with those draws), "kind": "eval"
(Resize(round(s / 0.875)) + CenterCrop(s)) or "kind": "resize" (Resize((s, s))).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def geometry(case, image):
    """The case's transform, applied to a PIL image or a float CHW tensor."""
    size = case["size"]
    kind = case["kind"]
    if kind == "crop":
        out = F.resized_crop(
            image, case["top"], case["left"], case["height"], case["width"], [size, size],
            interpolation=T.InterpolationMode.BILINEAR, antialias=True,
        )
        return F.hflip(out) if case["flip"] else out
    if kind == "eval":
        resize = T.Resize(round(size / 0.875), interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        return T.CenterCrop(size)(resize(image))
    if kind == "resize":
        return T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)(image)
    raise ValueError(kind)


def transforms(cases_path, out_dir):
    cases = json.loads(Path(cases_path).read_text())
    out_dir = Path(out_dir)
    for i, case in enumerate(cases):
        image = Image.open(case["image"]).convert("RGB")
        through_pil = F.normalize(F.to_tensor(geometry(case, image)), MEAN, STD)
        through_float = F.normalize(geometry(case, F.to_tensor(image)), MEAN, STD)
        through_pil.numpy().astype("<f4").tofile(out_dir / f"{i}.pil.f32")
        through_float.numpy().astype("<f4").tofile(out_dir / f"{i}.float.f32")


def jpegs(image_path, out_dir):
    image = Image.open(image_path).convert("RGB")
    out_dir = Path(out_dir)
    kinds = {
        "baseline 4:2:0 q90": (image, dict(quality=90)),
        "baseline 4:4:4 q95": (image, dict(quality=95, subsampling=0)),
        "baseline 4:2:2 q75": (image, dict(quality=75, subsampling=1)),
        "progressive 4:2:0 q90": (image, dict(quality=90, progressive=True)),
        "greyscale q90": (image.convert("L"), dict(quality=90)),
        "cmyk q90": (image.convert("CMYK"), dict(quality=90)),
    }
    written = {}
    for i, (name, (source, options)) in enumerate(kinds.items()):
        jpeg = out_dir / f"{i}.jpg"
        source.save(jpeg, "JPEG", **options)
        decoded = np.asarray(Image.open(jpeg).convert("RGB"))
        rgb = out_dir / f"{i}.rgb"
        decoded.tofile(rgb)
        written[name] = {"jpeg": str(jpeg), "rgb": str(rgb), "width": decoded.shape[1], "height": decoded.shape[0]}
    print(json.dumps(written))


def crop_params(width, height, n):
    torch.manual_seed(0)
    image = torch.empty(1, height, width)
    params = [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    print(json.dumps(params))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "transforms":
        transforms(*args)
    elif command == "jpegs":
        jpegs(*args)
    elif command == "crop-params":
        crop_params(*map(int, args))
    else:
        raise SystemExit(f"unknown command {command}")
