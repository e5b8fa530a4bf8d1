"""Generated images that are NOT OCT B-scans, for the input gate ("not an OCT B-scan").

Generators are split into a training family and a held-out family so the card can
report the gate's rejection rate on kinds of images it never saw during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Generator = Callable[[np.random.Generator], Image.Image]

_WORDS = (
    "patient referral report retina macula clinic date signature scan laser left right "
    "visual acuity follow-up imaging consent prescription summary diagnosis treatment"
).split()


def _size(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(256, 900)), int(rng.integers(200, 700))


def gen_noise(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    kind = rng.integers(3)
    if kind == 0:
        a = rng.normal(rng.uniform(40, 200), rng.uniform(5, 80), (h, w))
    elif kind == 1:
        a = rng.uniform(0, 255, (h, w))
    else:
        a = (rng.random((h, w)) < rng.uniform(0.05, 0.5)) * 255.0
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def gen_gradient(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    a = np.cos(ang) * xx / w + np.sin(ang) * yy / h
    a = (a - a.min()) / (np.ptp(a) + 1e-6) * rng.uniform(60, 255) + rng.uniform(0, 60)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def gen_blank(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    a = np.full((h, w), rng.uniform(0, 255)) + rng.normal(0, 1.0, (h, w))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def gen_text(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    img = Image.new("L", (w, h), int(rng.integers(200, 256)))
    d = ImageDraw.Draw(img)
    y = int(rng.integers(5, 30))
    while y < h - 12:
        line = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 12))))
        d.text((int(rng.integers(5, 40)), y), line, fill=int(rng.integers(0, 80)))
        y += int(rng.integers(12, 28))
    return img


def gen_fundus(rng: np.random.Generator) -> Image.Image:
    """A fundus-like colour photograph: orange disc, bright optic disc, dark vessels."""
    s = int(rng.integers(300, 700))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    cx, cy, r = s / 2, s / 2, s * rng.uniform(0.38, 0.48)
    d = np.hypot(xx - cx, yy - cy)
    shade = np.clip(1 - (d / r) ** 2 * 0.5, 0, 1)
    base = np.array([rng.uniform(150, 230), rng.uniform(60, 120), rng.uniform(10, 50)])
    img = shade[..., None] * base[None, None]
    img[d > r] = 0
    ox, oy = cx + rng.uniform(-0.5, 0.5) * r, cy + rng.uniform(-0.2, 0.2) * r
    od = np.hypot(xx - ox, yy - oy) < r * 0.12
    img[od] = [250, 230, 170]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(6, 14))):
        pts = [(ox, oy)]
        ang = rng.uniform(0, 2 * math.pi)
        for _ in range(8):
            ang += rng.normal(0, 0.35)
            step = r * 0.15
            pts.append((pts[-1][0] + step * math.cos(ang), pts[-1][1] + step * math.sin(ang)))
        draw.line(pts, fill=(120, 20, 10), width=int(rng.integers(2, 6)))
    return pil.filter(ImageFilter.GaussianBlur(1.0))


def gen_stripes(rng: np.random.Generator) -> Image.Image:
    """Horizontal stripes and bands: the nearest thing to a B-scan that is not one."""
    w, h = _size(rng)
    y = np.arange(h, dtype=np.float32)[:, None]
    a = 128 + 100 * np.sin(y / rng.uniform(3, 40) + rng.uniform(0, 6)) + rng.normal(0, 20, (h, w))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def gen_shapes(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    img = Image.new("L", (w, h), int(rng.integers(0, 256)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 20))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        if rng.random() < 0.5:
            d.ellipse((x0, y0, x1, y1), fill=int(rng.integers(0, 256)))
        else:
            d.rectangle((x0, y0, x1, y1), fill=int(rng.integers(0, 256)))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))


def gen_checker(rng: np.random.Generator) -> Image.Image:
    w, h = _size(rng)
    c = int(rng.integers(8, 64))
    yy, xx = np.mgrid[0:h, 0:w]
    a = (((yy // c) + (xx // c)) % 2) * rng.uniform(80, 255) + rng.normal(0, 10, (h, w))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _skimage_images(names: tuple[str, ...]) -> list[Image.Image]:
    """Sample photographs shipped with scikit-image (no download)."""
    from skimage import data as skdata

    out = []
    for n in names:
        try:
            arr = getattr(skdata, n)()
        except Exception:  # noqa: BLE001 - some samples need an optional download: skip them
            continue
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            f = arr.astype(np.float32)
            arr = (255 * (f - f.min()) / (np.ptp(f) + 1e-6)).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        out.append(Image.fromarray(arr))
    return out


TRAIN_SKIMAGE = ("astronaut", "camera", "coins", "moon", "page", "text", "chelsea", "horse", "clock", "hubble_deep_field", "immunohistochemistry", "grass")
HELDOUT_SKIMAGE = ("coffee", "rocket", "brick", "gravel", "cell", "retina", "logo", "microaneurysms")

TRAIN_GENERATORS: dict[str, Generator] = {
    "noise": gen_noise,
    "gradient": gen_gradient,
    "text": gen_text,
    "fundus": gen_fundus,
    "stripes": gen_stripes,
}
HELDOUT_GENERATORS: dict[str, Generator] = {
    "blank": gen_blank,
    "shapes": gen_shapes,
    "checker": gen_checker,
}


def random_view(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop (and sometimes a grey conversion) of a photograph."""
    w, h = img.size
    fw, fh = rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0)
    cw, ch = max(32, int(w * fw)), max(32, int(h * fh))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        out = out.convert("L")
    return out


def make_negatives(n: int, seed: int, *, heldout: bool) -> list[tuple[str, Image.Image]]:
    """Return ``n`` (kind, image) negatives from the training or the held-out family."""
    rng = np.random.default_rng(seed)
    gens = HELDOUT_GENERATORS if heldout else TRAIN_GENERATORS
    photos = _skimage_images(HELDOUT_SKIMAGE if heldout else TRAIN_SKIMAGE)
    kinds = list(gens) + (["photo"] * max(1, len(gens)) if photos else [])
    out: list[tuple[str, Image.Image]] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "photo":
            img = random_view(photos[int(rng.integers(len(photos)))], rng)
        else:
            img = gens[kind](rng)
        out.append((kind, img))
    return out
