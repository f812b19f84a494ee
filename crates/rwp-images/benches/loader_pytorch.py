"""PyTorch's side of rwp-images' loader benchmark (benches/loader.rs).

    generate DIR CLASSES PER_CLASS   an ImageFolder tree DIR/class_NN/NNNN.jpg of photo-like
                                     JPEGs (quality 90, 4:2:0, sizes around 500x375 in both
                                     orientations); DIR/complete.json is written last
    run DIR WORKERS BATCH EPOCHS SIZE
                                     torchvision's ImageFolder with RandomResizedCrop(SIZE),
                                     RandomHorizontalFlip, ToTensor and the ImageNet Normalize,
                                     through a DataLoader (shuffled, persistent workers) for
                                     EPOCHS epochs; the first batch is warm-up. Prints one JSON
                                     line: images, seconds, images_per_s
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo_like(rng, width, height):
    """Smooth colour fields, a few hard-edged shapes, soft focus, texture and sensor noise."""
    grid = rng.uniform(0, 255, size=(rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    image = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    # Objects at every scale: a few large ones, many small ones.
    for _ in range(rng.integers(10, 40)):
        extent = width * rng.uniform(0.03, 0.6)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([cx - extent / 2, cy - extent / 3, cx + extent / 2, cy + extent / 3], fill=colour)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
            draw.polygon([(cx + extent * np.cos(a) / 2, cy + extent * np.sin(a) / 2) for a in angles], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    pixels = np.asarray(image).astype(np.float32)
    texture = rng.normal(0, 1, size=(height // 2 + 1, width // 2 + 1)).astype(np.float32)
    texture = np.asarray(Image.fromarray(texture, mode="F").resize((width, height), Image.BILINEAR))
    pixels += 18 * texture[:, :, None] + rng.normal(0, 11, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(root, classes, per_class):
    root = Path(root)
    rng = np.random.default_rng(0)
    sizes = []
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            short = int(rng.integers(300, 421))
            long = int(short * rng.uniform(1.2, 1.5))
            width, height = (long, short) if rng.random() < 0.75 else (short, long)
            path = root / f"class_{c:02d}" / f"{i:04d}.jpg"
            photo_like(rng, width, height).save(path, "JPEG", quality=90)
            sizes.append(path.stat().st_size)
    summary = {
        "classes": classes,
        "per_class": per_class,
        "images": len(sizes),
        "mean_kb": round(sum(sizes) / len(sizes) / 1024, 1),
        "min_kb": round(min(sizes) / 1024, 1),
        "max_kb": round(max(sizes) / 1024, 1),
    }
    (root / "complete.json").write_text(json.dumps(summary))
    print(json.dumps(summary))


def run(root, workers, batch, epochs, size):
    import torch
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    transform = T.Compose([
        T.RandomResizedCrop(size),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    dataset = ImageFolder(root, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    images, start = 0, None
    for _ in range(epochs):
        for pixels, _labels in loader:
            if start is None:
                start = time.perf_counter()  # the first batch is warm-up (worker start-up)
            else:
                images += pixels.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"images": images, "seconds": seconds, "images_per_s": images / seconds}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "generate":
        generate(args[0], int(args[1]), int(args[2]))
    elif command == "run":
        run(args[0], *map(int, args[1:]))
    else:
        raise SystemExit(f"unknown command {command}")
