"""Deterministic preprocessing of OCT B-scans, shared by training and serving.

numpy and Pillow only: the web app and the Celery workers import this module, and
``training/`` imports the very same functions, so a served image goes through exactly
the pipeline the model was trained and evaluated on.

Why this pipeline: a plain resize of the whole frame ties the model to one clinic's
framing (Kermany scans are flat and centred, OCTDL scans are curved, off-centre and
framed differently). We therefore

1. find the retina line (the brightest layer, RPE/choroid complex) in every column,
2. flatten the scan so that this line is straight (undoes curvature and tilt),
3. locate the retina band in the flattened row-intensity profile,
4. crop a vertical window around the band whose height scales with the band thickness,
5. stretch contrast per image (1st..99.5th percentile) and resize to the square input.

The geometry of every step is kept so that the class-activation map can be mapped
back onto the original image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps

from cases.pixels import colour_saturation
from inference.card import load_model_json

#: Defaults used when model.json carries no ``preprocessing`` section (e.g. while
#: training the very first model). model.json always wins.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "input_size": 192,
    "mean": 0.5,
    "std": 0.5,
    "analysis_size": 256,
    "edge_ignore_frac": 0.04,
    "line_smooth_frac": 0.125,
    "band_threshold": 0.25,
    "window_scale": 2.0,
    "window_min_frac": 0.3,
    "window_max_frac": 1.0,
    "contrast_low_pct": 1.0,
    "contrast_high_pct": 99.5,
    "precheck_max_saturation": 0.12,
    "precheck_min_std": 4.0,
    "precheck_min_band_contrast": 0.06,
}


def preprocessing_config(card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the preprocessing constants: defaults overlaid by model.json's section."""
    card = load_model_json() if card is None else card
    cfg = dict(DEFAULT_PREPROCESSING)
    cfg.update(card.get("preprocessing", {}))
    return cfg


@dataclass(frozen=True)
class Band:
    """Where the retina sits in one grey image (original pixel coordinates)."""

    width: int
    height: int
    shifts: np.ndarray  # int per column: flat[y, x] = grey[y + shifts[x], x]
    top: float  # band top in flattened rows
    bottom: float  # band bottom in flattened rows
    contrast: float  # (peak - background) of the row profile, 0..1
    found: bool  # False when no plausible band was found

    @property
    def centre(self) -> float:
        return 0.5 * (self.top + self.bottom)

    @property
    def thickness(self) -> float:
        return max(1.0, self.bottom - self.top)


@dataclass(frozen=True)
class Geometry:
    """How the model input was cut from the original image (to map heatmaps back)."""

    width: int
    height: int
    shifts: np.ndarray
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in flattened coordinates
    flipped: bool = False


@dataclass(frozen=True)
class Preprocessed:
    """A model input and what is needed to interpret it."""

    array: np.ndarray  # float32 [1, S, S], normalised with model.json mean/std
    geometry: Geometry
    band: Band
    precheck_reason: str = ""  # "" when the image looks like an OCT B-scan
    stats: dict[str, float] = field(default_factory=dict)


def to_grey(image: Image.Image) -> np.ndarray:
    """Return the image as a uint8 grey array (EXIF rotation applied, alpha dropped)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) not in (None, 1):
        image = ImageOps.exif_transpose(image)  # otherwise it would only copy
    if image.mode == "L":
        return np.asarray(image)
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I", "I;16", "F"):
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo + 1e-6) * 255.0
        return arr.astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def remove_fill(grey: np.ndarray) -> np.ndarray:
    """Blank out uniform white fill (registration padding in Kermany scans).

    Some devices export rotated scans padded with pure white; left alone, that fill
    is the brightest "layer" of the image and the band search locks onto it. A
    pixel is fill when its whole 7x7 neighbourhood is near 255 (tissue speckle
    never is), and fill becomes black like every other out-of-scan region.
    """
    return _remove_fill(grey, _histogram(grey))


def _remove_fill(grey: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """:func:`remove_fill` given the image's histogram; returns ``grey`` itself when nothing is fill."""
    # Most scans have no fill: the histogram rules that out before any full-size
    # boolean mask is built. Same test as ``(grey >= 248).mean() < 0.002``.
    if int(hist[248:].sum()) / grey.size < 0.002:
        return grey
    bright = grey >= 248
    # Separable min/max filters on bytes: the same masks as 7x7 / 9x9 box means
    # (all bright / any fill), an order of magnitude faster than float box sums.
    fill = _window_extreme(_window_extreme(bright.view(np.uint8), 7, 0, np.minimum), 7, 1, np.minimum)
    if not fill.any():
        return grey
    # Grow the mask by a few pixels: JPEG ringing leaves a bright rim around the fill.
    grown = _window_extreme(_window_extreme(fill, 9, 0, np.maximum), 9, 1, np.maximum).view(bool)
    return np.where(grown, np.uint8(0), grey)


def _along(arr: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """The view ``arr[..., start:start + length, ...]`` on ``axis``."""
    index = [slice(None)] * arr.ndim
    index[axis] = slice(start, start + length)
    return arr[tuple(index)]


def _pad_edge(a: np.ndarray, before: int, after: int, axis: int, dtype: Any = None) -> np.ndarray:
    """``np.pad(a, ..., mode="edge")`` along one axis (optionally converting), without its overhead."""
    n = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = n + before + after
    out = np.empty(shape, dtype=dtype or a.dtype)
    _along(out, axis, before, n)[...] = a
    _along(out, axis, 0, before)[...] = _along(a, axis, 0, 1)
    _along(out, axis, before + n, after)[...] = _along(a, axis, n - 1, 1)
    return out


def _window_extreme(a: np.ndarray, k: int, axis: int, op: np.ufunc) -> np.ndarray:
    """Min or max over a window of ``k`` along ``axis``, edge padded like ``_box_smooth``.

    Doubling (a sparse table): the extreme over 2^j values is the extreme of two
    overlapping runs of 2^(j-1), so a window of k costs about log2(k) passes, not k.
    Min and max are exact, so this equals the k-pass loop bit for bit.
    """
    n = a.shape[axis]
    k = max(1, int(k))
    run = _pad_edge(a, k // 2, k - 1 - k // 2, axis)
    span = 1
    while span * 2 <= k:
        length = run.shape[axis] - span
        run = op(_along(run, axis, 0, length), _along(run, axis, span, length))
        span *= 2
    # run[i] now covers span values from i; two overlapping runs cover k.
    return op(_along(run, axis, 0, n), _along(run, axis, k - span, n))


def _histogram(grey: np.ndarray) -> np.ndarray:
    """Return the 256-level histogram of a uint8 image (Pillow's C loop, int64)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(grey)).histogram(), dtype=np.int64)


def _std_of_levels(hist: np.ndarray) -> float:
    """Population standard deviation of the pixels counted by a 256-level histogram."""
    levels = np.arange(hist.size, dtype=np.float64)
    n = float(hist.sum())
    if n == 0:
        return 0.0
    mean = float((hist * levels).sum()) / n
    return float(np.sqrt((hist * (levels - mean) ** 2).sum() / n))


def _percentile_of_levels(hist: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` for float32 ``values`` given by a 256-level histogram.

    The order statistics are read off the cumulative histogram instead of
    partitioning tens of thousands of pixels.
    """
    cum = np.cumsum(hist)
    return _percentile_linear(int(cum[-1]), q, lambda i: np.float32(np.searchsorted(cum, i, side="right")))


def _percentile_sorted(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` of a sorted float32 vector."""
    return _percentile_linear(values.size, q, lambda i: values[i])


def _percentile_linear(n: int, q: float, order_statistic: Any) -> float:
    """numpy's default (linear) percentile, step by step in float32.

    Reproduces exactly what ``np.percentile`` returns for a float32 array (numpy 2:
    q / 100, virtual index (n - 1) q, and its two-sided lerp), given a function
    that returns the i-th smallest value. Checked against numpy in the tests.
    """
    q32 = np.float32(q) / np.float32(100)
    v = np.float32(n - 1) * q32
    prev = np.floor(v)
    if v >= n - 1:
        i = j = n - 1
    elif v < 0:
        i = j = 0
    else:
        i = int(prev)
        j = i + 1
    a = np.float32(order_statistic(i))
    b = np.float32(order_statistic(j))
    gamma = np.float32(v - prev)
    diff = b - a
    if gamma >= 0.5:
        return float(b - diff * (np.float32(1) - gamma))
    return float(a + diff * gamma)


def _median_last_axis(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=-1)``: the same values, from numpy's (vectorised) sort."""
    ordered = np.sort(x, axis=-1)
    n = ordered.shape[-1]
    if n % 2:
        return ordered[..., n // 2]
    return np.mean(ordered[..., n // 2 - 1 : n // 2 + 1], axis=-1)


def _box_smooth(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Moving average with edge padding (keeps the length), as float32.

    Integer input is summed exactly (k shifted slices) rather than through a float
    cumulative sum: the same values as the cumulative sum gives for integers, at a
    fraction of its cost (a float64 cumsum down the rows is slow in numpy).
    """
    k = max(1, int(k))
    if k == 1:
        return a
    n = a.shape[axis]
    if np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize <= 2:
        padded = _pad_edge(a, k // 2, k - 1 - k // 2, axis, dtype=np.int32)
        total = _along(padded, axis, 0, n).copy()
        for i in range(1, k):
            total += _along(padded, axis, i, n)
        return (total / k).astype(np.float32)
    padded = _pad_edge(a, k // 2, k - 1 - k // 2, axis, dtype=np.float64)
    shape = list(padded.shape)
    shape[axis] += 1
    c = np.empty(shape, dtype=np.float64)
    _along(c, axis, 0, 1)[...] = 0.0
    np.cumsum(padded, axis=axis, out=_along(c, axis, 1, padded.shape[axis]))
    return ((_along(c, axis, k, n) - _along(c, axis, 0, n)) / k).astype(np.float32)


def _running_median(a: np.ndarray, k: int) -> np.ndarray:
    k = max(1, int(k) | 1)
    if k == 1 or a.size < 3:
        return a
    padded = _pad_edge(a, k // 2, k // 2, 0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, k)
    return _median_last_axis(windows).astype(np.float32)


def find_band(grey: np.ndarray, cfg: dict[str, Any] | None = None) -> Band:
    """Locate the retina line per column and the retina band in the flattened image."""
    cfg = cfg or preprocessing_config()
    h, w = grey.shape
    if h < 16 or w < 16:
        # Far too small to hold a B-scan; keep the geometry trivial so serving still answers.
        return Band(width=w, height=h, shifts=np.zeros(w, np.int32), top=0.0, bottom=float(h), contrast=0.0, found=False)
    n = int(cfg["analysis_size"])
    sw, sh = min(w, n), min(h, n)
    # The analysis runs on a small copy: the band is a large structure and speckle
    # noise is averaged away by the box downscale.
    small_u8 = np.asarray(Image.fromarray(grey).resize((sw, sh), Image.BOX))
    sm = _box_smooth(small_u8, max(3, sh // 40), axis=0)
    sm = _box_smooth(sm, max(1, sw // 32), axis=1)
    edge = max(1, int(round(cfg["edge_ignore_frac"] * sh)))
    # Scanner overlays and wrap-around artefacts sit on the top/bottom border rows.
    inner = sm[edge : sh - edge]
    line = inner.argmax(axis=0).astype(np.float32) + edge
    # Median down each column, taken along rows of the transpose (same values, faster).
    col_contrast = inner.max(axis=0) - _median_last_axis(np.ascontiguousarray(inner.T))
    ok = col_contrast >= 0.3 * max(1e-3, float(np.median(col_contrast)))
    if ok.sum() >= 2:
        xs = np.arange(sw)
        line = np.interp(xs, xs[ok], line[ok]).astype(np.float32)
    line = _running_median(line, int(cfg["line_smooth_frac"] * sw))
    line = _box_smooth(line, max(1, int(cfg["line_smooth_frac"] * sw / 2)), axis=0)
    # Back to original resolution.
    line_full = np.interp(
        (np.arange(w) + 0.5) * sw / w - 0.5, np.arange(sw), line
    ) * (h / sh)
    ref = float(np.median(line_full))
    shifts = np.round(line_full - ref).astype(np.int32)

    # Flattening copies pixels, so flattening the bytes then converting is the same.
    flat_small = flatten(small_u8, np.round((line - np.median(line))).astype(np.int32)).astype(np.float32)
    profile = _box_smooth(flat_small.mean(axis=1), max(3, sh // 50), axis=0)
    bg = _percentile_sorted(np.sort(profile), 10)
    peak_row = int(profile[edge : sh - edge].argmax()) + edge
    peak = float(profile[peak_row])
    thr = bg + float(cfg["band_threshold"]) * (peak - bg)
    top = peak_row
    while top > 0 and profile[top - 1] > thr:
        top -= 1
    bottom = peak_row
    while bottom < sh - 1 and profile[bottom + 1] > thr:
        bottom += 1
    contrast = (peak - bg) / 255.0
    found = bool(contrast >= float(cfg["precheck_min_band_contrast"]) and bottom > top)
    scale = h / sh
    return Band(
        width=w,
        height=h,
        shifts=shifts,
        top=top * scale,
        bottom=(bottom + 1) * scale,
        contrast=float(contrast),
        found=found,
    )


def flatten(grey: np.ndarray, shifts: np.ndarray, rows: tuple[int, int] | None = None) -> np.ndarray:
    """Shift every column so that the retina line becomes straight (0 outside).

    ``rows`` = (start, stop) computes only those flattened rows (serving needs just
    the crop window).
    """
    h, w = grey.shape
    start, stop = rows if rows is not None else (0, h)
    shifts = np.asarray(shifts, dtype=np.intp)
    if stop <= start or w == 0:
        return np.zeros((max(0, stop - start), w), dtype=grey.dtype)
    # Copy the source rows the window can reach into a zero-padded buffer, then
    # gather all pixels with one flat index (``take`` on a contiguous buffer is far
    # cheaper than ``take_along_axis`` plus a validity mask).
    lo, hi = start + int(shifts.min()), stop + int(shifts.max())
    buf = np.zeros((hi - lo, w), dtype=grey.dtype)
    a, b = max(lo, 0), min(hi, h)
    if b > a:
        buf[a - lo : b - lo] = grey[a:b]
    row_offsets = (np.arange(start, stop, dtype=np.intp) - lo) * w
    column_offsets = shifts * w + np.arange(w, dtype=np.intp)
    return buf.ravel().take(row_offsets[:, None] + column_offsets[None, :])


def window(
    band: Band,
    cfg: dict[str, Any] | None = None,
    *,
    scale: float = 1.0,
    dy: float = 0.0,
    x0: float = 0.0,
    x1: float = 1.0,
) -> tuple[float, float, float, float]:
    """Return the crop box (flattened coordinates) around the band.

    ``scale``, ``dy`` (fraction of the window height) and the horizontal extent
    ``x0``/``x1`` (fractions of the width) are the augmentation knobs; serving uses
    the defaults.
    """
    cfg = cfg or preprocessing_config()
    h = band.height
    win = float(cfg["window_scale"]) * band.thickness
    win = float(np.clip(win, cfg["window_min_frac"] * h, cfg["window_max_frac"] * h)) * scale
    c = band.centre + dy * win
    return (x0 * band.width, c - win / 2.0, x1 * band.width, c + win / 2.0)


def crop_resize(flat: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop ``box`` (zero padded outside the image) and resize to ``size``² (uint8 levels)."""
    img = Image.fromarray(flat)
    box_i = tuple(int(round(v)) for v in box)
    if box_i != (0, 0, *img.size):
        img = img.crop(box_i)  # Pillow pads with 0 outside the image
    crop = img.resize((size, size), Image.BILINEAR)
    return np.asarray(crop)


def stretch_contrast(arr: np.ndarray, cfg: dict[str, Any] | None = None) -> np.ndarray:
    """Map the 1st..99.5th percentile to 0..1: gain and brightness differ by device."""
    cfg = cfg or preprocessing_config()
    lo = float(np.percentile(arr, cfg["contrast_low_pct"]))
    hi = float(np.percentile(arr, cfg["contrast_high_pct"]))
    return _stretch(arr, lo, hi)


def _stretch_levels(levels: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """:func:`stretch_contrast` of ``levels.astype(float32)``, percentiles from the histogram."""
    hist = _histogram(levels)
    lo = _percentile_of_levels(hist, float(cfg["contrast_low_pct"]))
    hi = _percentile_of_levels(hist, float(cfg["contrast_high_pct"]))
    return _stretch(levels.astype(np.float32), lo, hi)


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((arr - lo) / max(hi - lo, 1.0), 0.0, 1.0).astype(np.float32)


def normalise(arr01: np.ndarray, cfg: dict[str, Any] | None = None) -> np.ndarray:
    """Apply model.json mean/std to a [0, 1] image and add the channel axis."""
    cfg = cfg or preprocessing_config()
    out = (arr01 - float(cfg["mean"])) / float(cfg["std"])
    return out[None].astype(np.float32)


def precheck(
    image: Image.Image,
    grey: np.ndarray,
    band: Band,
    cfg: dict[str, Any] | None = None,
    *,
    grey_std: float | None = None,
    saturation: float | None = None,
) -> str:
    """Return why ``image`` is clearly not an OCT B-scan, or "" if it may be one.

    Cheap, deterministic rules that catch what a network trained only on grey scans
    should never have to judge: colour photographs, blank images, no retina band.
    ``saturation`` is the colour saturation of the file as uploaded, when ``image``
    is a grey rendering of it (as stored scans are); without it, ``image``'s own.
    """
    cfg = cfg or preprocessing_config()
    sat = colour_saturation(image) if saturation is None else float(saturation)
    if sat > float(cfg["precheck_max_saturation"]):
        return "The image is in colour; OCT B-scans are greyscale."
    if (float(grey.std()) if grey_std is None else grey_std) < float(cfg["precheck_min_std"]):
        return "The image is almost uniform; no retina is visible."
    if not band.found:
        return "No retina band was found in the image."
    return ""


def preprocess(
    image: Image.Image, cfg: dict[str, Any] | None = None, *, saturation: float | None = None
) -> Preprocessed:
    """Turn one image into the model input (deterministic; what serving uses).

    ``saturation``: the uploaded file's colour saturation when ``image`` is its grey
    rendering (see :func:`precheck`).
    """
    return preprocess_many(image, [cfg or preprocessing_config()], saturation=saturation)[0]


#: The constants that only frame the crop: members of an ensemble may differ in these
#: (``training.ensemble``), and share the grey image, the band and the precheck.
WINDOW_KEYS = ("window_scale", "window_min_frac", "window_max_frac")


def same_but_window(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two preprocessing configs differ at most in the window (:data:`WINDOW_KEYS`)."""
    return {k: v for k, v in a.items() if k not in WINDOW_KEYS} == {k: v for k, v in b.items() if k not in WINDOW_KEYS}


def preprocess_many(
    image: Image.Image, cfgs: list[dict[str, Any]], *, saturation: float | None = None
) -> list[Preprocessed]:
    """One image as the inputs of several models that frame it with different windows.

    The grey image, the retina band and the precheck are computed once (they do not
    depend on the window); each config then crops its own window. Refuses configs that
    differ in anything but :data:`WINDOW_KEYS`.
    """
    cfg = cfgs[0]
    if any(not same_but_window(cfg, c) for c in cfgs[1:]):
        raise ValueError("the configs differ in more than the window; preprocess the image once per config")
    raw = to_grey(image)
    hist = _histogram(raw)
    grey = _remove_fill(raw, hist)
    if grey is not raw:
        hist = _histogram(grey)
    band = find_band(grey, cfg)
    grey_std = _std_of_levels(hist)
    reason = precheck(image, grey, band, cfg, grey_std=grey_std, saturation=saturation)
    out = []
    for c in cfgs:
        box = window(band, c)
        # Flatten only the rows the crop can reach: rows outside the image are zero in
        # the full flattened image too, and the crop pads them with zero, so the input
        # is the same as flattening everything first.
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        r0, r1 = min(max(0, y0), band.height), max(min(band.height, y1), 0)
        r1 = max(r0, r1)
        flat = flatten(grey, band.shifts, rows=(r0, r1))
        # The crop is uint8 levels: its percentiles come from a histogram, not a sort.
        arr = _stretch_levels(crop_resize(flat, (x0, y0 - r0, x1, y1 - r0), int(c["input_size"])), c)
        out.append(
            Preprocessed(
                array=normalise(arr, c),
                geometry=Geometry(width=band.width, height=band.height, shifts=band.shifts, box=box),
                band=band,
                precheck_reason=reason,
                stats={"band_contrast": band.contrast, "grey_std": grey_std},
            )
        )
    return out


#: The heatmap is sampled every HEATMAP_STEP pixels of the original image.
HEATMAP_STEP = 4


def heatmap_to_grid(heatmap: np.ndarray, geometry: Geometry, *, step: int = HEATMAP_STEP) -> np.ndarray:
    """Map a model-input heatmap [S, S] onto the original image, sampled every ``step`` px.

    Returns float32 in [0, 1] of shape (ceil(H / step), ceil(W / step)): value [i, j]
    belongs to original pixel (step * i, step * j). The class-activation map comes
    from the network's coarse last feature grid (6 x 6 cells over the crop), so a
    4-px grid shows all there is to see; the overlay renderer
    (:mod:`inference.heatmap`) interpolates it up to the full image.

    The map is resized to the crop box at grid resolution, placed in flattened
    coordinates and shifted back column by column (the inverse of :func:`flatten`);
    box and shifts are rounded to the grid, so positions are exact to ``step`` / 2 px.
    """
    h, w = geometry.height, geometry.width
    step = max(1, int(step))
    gh, gw = -(-h // step), -(-w // step)
    hm = np.ascontiguousarray(heatmap[:, ::-1] if geometry.flipped else heatmap, dtype=np.float32)
    x0, y0, x1, y1 = (int(round(v)) for v in geometry.box)
    bw, bh = max(1, round((x1 - x0) / step)), max(1, round((y1 - y0) / step))
    # Bilinear, pixel centres aligned as when the crop was resized to the input.
    box = np.asarray(Image.fromarray(hm).resize((bw, bh), Image.BILINEAR), dtype=np.float32)
    # The crop box in flattened grid rows/columns; only flattened rows inside the
    # image (0..H) exist, so the rest of the box is dropped.
    gx0, gy0 = round(x0 / step), round(y0 / step)
    canvas = np.zeros((gh, gw), dtype=np.float32)
    r0, r1 = max(0, gy0), min(gh, gy0 + bh, -(-min(h, y1) // step))
    c0, c1 = max(0, gx0), min(gw, gx0 + bw)
    if r1 > r0 and c1 > c0:
        canvas[r0:r1, c0:c1] = box[r0 - gy0 : r1 - gy0, c0 - gx0 : c1 - gx0]
    # Original row y of column x is flattened row y - shift[x]: unflatten.
    shifts = np.round(geometry.shifts.astype(np.float64)[::step][:gw] / step).astype(np.intp)
    return np.clip(flatten(canvas, -shifts), 0.0, 1.0)
