"""The toy dataset: small, learnable, generated on first use as real JPEG files in the ImageNet layout.

Each class is a shape drawn in its own hue (hue and shape both carry the label, so a network learns it in
minutes on a CPU), at a random position, size, rotation and brightness, over a random low-contrast texture.
Generation is deterministic in (seed, sizes): the same config always yields the same files, and a finished
folder is reused. Because the files are ordinary JPEGs in ``train/<class>/`` and ``val/<class>/``, the toy set
exercises exactly the ImageFolder path that ImageNet uses.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rsb_composer.config import ConfigError, ToyConfig, check, check_choice
from rsb_composer.node_lock import node_lock

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "circle", "square", "triangle", "cross", "ring", "diamond", "star", "hbars", "vbars", "checker",
)
FORMAT_VERSION = 1  # bump when the drawing changes, so cached folders are regenerated
MARKER = "toy.json"
TEXTURES = ("smooth", "fractal")


def check_toy(cfg: ToyConfig) -> None:
    check(2 <= cfg.num_classes <= len(CLASS_NAMES), "data.toy.num_classes", cfg.num_classes,
          f"the toy set has 2 to {len(CLASS_NAMES)} classes")
    check(cfg.train_per_class >= 1, "data.toy.train_per_class", cfg.train_per_class, "must be at least 1")
    check(cfg.val_per_class >= 1, "data.toy.val_per_class", cfg.val_per_class, "must be at least 1")
    check(cfg.image_size >= 16, "data.toy.image_size", cfg.image_size, "must be at least 16 pixels")
    if cfg.max_image_size is not None:
        check(cfg.max_image_size >= cfg.image_size, "data.toy.max_image_size", cfg.max_image_size,
              f"must be at least data.toy.image_size={cfg.image_size}")
    check_choice("data.toy.texture", cfg.texture, TEXTURES)


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rsb-composer" / "toy"


def dataset_dir(cfg: ToyConfig, path: str | None) -> Path:
    """Where the toy set for ``cfg`` lives: ``path`` if given, else a cache folder named by its parameters."""
    if path is not None:
        return Path(path)
    name = (f"v{FORMAT_VERSION}-c{cfg.num_classes}-n{cfg.train_per_class}-{cfg.val_per_class}"
            f"-s{cfg.image_size}{_variant(cfg)}-seed{cfg.seed}")
    return default_cache_root() / name


def _variant(cfg: ToyConfig) -> str:
    """The name part for the photo-like options; empty for the defaults, so existing sets keep their names."""
    sizes = f"-{cfg.max_image_size}" if cfg.max_image_size is not None else ""
    return sizes + (f"-{cfg.texture}" if cfg.texture != "smooth" else "")


def _spec(cfg: ToyConfig) -> dict[str, int | str]:
    spec: dict[str, int | str] = {
        "format_version": FORMAT_VERSION,
        "num_classes": cfg.num_classes,
        "train_per_class": cfg.train_per_class,
        "val_per_class": cfg.val_per_class,
        "image_size": cfg.image_size,
        "seed": cfg.seed,
    }
    if cfg.max_image_size is not None:
        spec["max_image_size"] = cfg.max_image_size
    if cfg.texture != "smooth":
        spec["texture"] = cfg.texture
    return spec


def ensure_toy_dataset(cfg: ToyConfig, path: str | None = None) -> Path:
    """Generate the toy set unless a complete copy for the same parameters is already there; return its root.

    Safe to call from every process of a ``composer -n N`` run: one generates under a file lock, the others
    wait and then reuse its result.
    """
    root = dataset_dir(cfg, path)
    if _is_complete(root, cfg):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with node_lock(root.parent / f".{root.name}.lock"):
        if _is_complete(root, cfg):
            return root
        if root.exists() and any(root.iterdir()):
            raise ConfigError(
                f"data.path={str(root)!r}: exists but holds no toy set for these parameters; remove it or choose "
                "another data.path"
            )
        log.info("generating the toy dataset (%d classes, %d+%d images per class, %d px) in %s",
                 cfg.num_classes, cfg.train_per_class, cfg.val_per_class, cfg.image_size, root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            _generate(cfg, tmp)
            (tmp / MARKER).write_text(json.dumps(_spec(cfg), indent=2) + "\n")
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)  # atomic: a crash mid-generation leaves no half-made dataset behind
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_complete(root: Path, cfg: ToyConfig) -> bool:
    try:
        return json.loads((root / MARKER).read_text()) == _spec(cfg)
    except (OSError, ValueError):
        return False


def _generate(cfg: ToyConfig, root: Path) -> None:
    for split, per_class, split_seed in (("train", cfg.train_per_class, 0), ("val", cfg.val_per_class, 1)):
        for label in range(cfg.num_classes):
            folder = root / split / f"{label:02d}_{CLASS_NAMES[label]}"
            folder.mkdir(parents=True)
            rng = np.random.default_rng([cfg.seed, split_seed, label])
            for index in range(per_class):
                width = height = cfg.image_size
                if cfg.max_image_size is not None:  # ImageNet-like: mostly landscape, 2:3 to 1:1
                    width = int(rng.integers(cfg.image_size, cfg.max_image_size + 1))
                    height = max(16, round(width * rng.uniform(2 / 3, 1.0)))
                image = draw_example(label, cfg.num_classes, (width, height), rng, cfg.texture)
                image.save(folder / f"{index:05d}.jpg", quality=90)


def draw_example(label: int, num_classes: int, size: tuple[int, int], rng: np.random.Generator,
                 texture: str = "smooth") -> Image.Image:
    """One image of class ``label``: its shape in its hue over a random texture; ``size`` is (width, height)."""
    width, height = size
    background = _texture(width, height, rng) if texture == "smooth" else _fractal(width, height, rng)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)

    hue = (label / num_classes + rng.uniform(-0.02, 0.02)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    colour = (int(r * 255), int(g * 255), int(b * 255))

    radius = min(width, height) * rng.uniform(0.22, 0.38)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    angle = rng.uniform(0, 2 * math.pi)
    _draw_shape(draw, CLASS_NAMES[label], cx, cy, radius, angle, colour)
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.6)))


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Low-saturation noise at a coarse scale, upsampled: a background that is never a plain colour."""
    coarse = rng.integers(0, 4) + 2
    base = rng.uniform(40, 200)
    noise = rng.normal(base, 25, size=(coarse, coarse, 3)).clip(0, 255).astype(np.uint8)
    tex = np.asarray(Image.fromarray(noise).resize((width, height), Image.BILINEAR), dtype=np.float32)
    tex += rng.normal(0, 6, size=tex.shape)
    return tex.clip(0, 255).astype(np.uint8)


def _fractal(width: int, height: int, rng: np.random.Generator, decay: float = 0.9) -> np.ndarray:
    """Noise at every scale from the whole image down to single pixels (octaves of upsampled random grids),
    each octave a little weaker than the last: close to the 1/f spectrum of photographs, so at JPEG quality 90
    its files come to about ImageNet's size (docs/benchmarks.md) and cost a decoder what a photo does.
    """
    import torch
    import torch.nn.functional as F

    total = torch.zeros(1, 3, height, width)
    grid, amplitude = 2, 1.0
    while grid < 2 * max(width, height):
        noise = rng.normal(0.0, amplitude, size=(1, 3, max(2, grid * height // width), grid)).astype(np.float32)
        total += F.interpolate(torch.from_numpy(noise), size=(height, width), mode="bilinear", align_corners=False)
        grid, amplitude = grid * 2, amplitude * decay
    tex = total[0].permute(1, 2, 0).numpy()
    tex = (tex - tex.mean()) / tex.std() * 50 + rng.uniform(80, 170)
    return tex.clip(0, 255).astype(np.uint8)


def _polygon(cx: float, cy: float, radius: float, angle: float, points: int, inner: float | None = None):
    coords = []
    steps = points * (2 if inner else 1)
    for i in range(steps):
        r = radius if inner is None or i % 2 == 0 else radius * inner
        theta = angle + 2 * math.pi * i / steps
        coords.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
    return coords


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, angle: float,
                colour: tuple[int, int, int]) -> None:
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = max(2, int(radius * 0.35))
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius * 1.2, angle, 4), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius * 1.2, angle, 3), fill=colour)
    elif shape == "cross":
        for theta in (angle, angle + math.pi / 2):
            dx, dy = radius * math.cos(theta), radius * math.sin(theta)
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=colour, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif shape == "diamond":
        coords = _polygon(cx, cy, radius * 1.2, angle, 4)
        draw.polygon([(x, cy + (y - cy) * 0.5) for x, y in coords], fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius * 1.2, angle, 5, inner=0.45), fill=colour)
    elif shape in ("hbars", "vbars"):
        stripe = max(2, int(radius / 3))
        for k in range(-3, 4, 2):
            offset = k * stripe
            if shape == "hbars":
                draw.rectangle((cx - radius, cy + offset, cx + radius, cy + offset + stripe), fill=colour)
            else:
                draw.rectangle((cx + offset, cy - radius, cx + offset + stripe, cy + radius), fill=colour)
    elif shape == "checker":
        cell = max(2, int(radius / 2))
        for i in range(-2, 2):
            for j in range(-2, 2):
                if (i + j) % 2 == 0:
                    x0, y0 = cx + i * cell, cy + j * cell
                    draw.rectangle((x0, y0, x0 + cell, y0 + cell), fill=colour)
    else:  # pragma: no cover - CLASS_NAMES and this function change together
        raise ValueError(f"unknown toy shape {shape!r}")
