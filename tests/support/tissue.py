"""Synthetic H&E-like slides with known tissue masks, for judging tissue detectors.

Each slide is painted at the size asked, from a seeded generator:

- glass: light grey with a slight tint, pixel noise and vignetting (darker
  corners), as a scanner's background looks;
- tissue: irregular fragments (a smoothed random field inside soft ellipses),
  made of regions of cellular tissue (pink eosin with purple hematoxylin
  nuclei), pale pink stroma and pale bluish (hematoxylin-only) stroma, with
  fibre texture and noise;
- fat: white round vacuoles inside the tissue, counted as tissue (they are
  adipocytes; a pathologist's outline includes them);
- pen marks (optional): dark green and blue ink strokes with soft edges,
  mostly on the glass around the tissue, crossing it here and there; the ink
  is *not* tissue (where it covers tissue the truth is "not tissue" too);
- dust (optional): small dark grey specks and fibres, not tissue.

The colours are those of stains, not of the detector's rules: eosin and
hematoxylin are mixed in optical density (Beer--Lambert) with Ruifrok and
Johnston's stain vectors, the pale stromas being the same stains at low
density, so the fixtures stay fair to grey-level detectors and colour
detectors alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SLIDES", "Slide", "SlideSpec", "make_slide", "score"]

#: Ruifrok & Johnston's optical-density vectors (R, G, B) of hematoxylin and eosin
HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
EOSIN = np.array([0.072, 0.990, 0.105])


@dataclasses.dataclass(frozen=True)
class SlideSpec:
    """What one synthetic slide holds.

    Attributes
    ----------
    tissue : float
        Fraction of the slide the tissue fragments cover (roughly).
    fragments : int
        Tissue fragments.
    pale : float
        Fraction of the tissue that is pale stroma (pink and bluish, half each).
    bluish : float
        Of the pale stroma, the fraction that is bluish.
    fat : float
        Fraction of the tissue that is fat vacuoles (white).
    pen : int
        Pen strokes.
    dust : int
        Dust specks.
    vignetting : float
        Darkening of the corners (0.08: 8 % darker than the centre).
    """

    tissue: float
    fragments: int = 3
    pale: float = 0.3
    bluish: float = 0.5
    fat: float = 0.05
    pen: int = 0
    dust: int = 0
    vignetting: float = 0.06


#: the fixtures: name -> spec (tissue proportions from a few fragments to a crowded slide)
SLIDES: dict[str, SlideSpec] = {
    "pale-stroma": SlideSpec(tissue=0.32, fragments=2, pale=0.6, bluish=0.6, fat=0.04),
    "small-fragments": SlideSpec(tissue=0.10, fragments=7, pale=0.4, fat=0.03, vignetting=0.10),
    "crowded": SlideSpec(tissue=0.60, fragments=2, pale=0.35, fat=0.08, vignetting=0.05),
    "fatty": SlideSpec(tissue=0.35, fragments=3, pale=0.4, bluish=0.4, fat=0.30),
    "pen-and-dust": SlideSpec(tissue=0.25, fragments=3, pale=0.45, fat=0.05, pen=4, dust=60, vignetting=0.08),
}


def _field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A smooth random field of mean 0 and std 1, features about ``scale`` pixels wide."""
    step = max(1, int(scale // 4))  # broad fields: drawn small and enlarged (same look, far faster)
    small = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1) if step > 1 else shape
    f = ndi.gaussian_filter(rng.standard_normal(small), max(scale / step, 0.5), mode="wrap")
    if step > 1:
        f = ndi.zoom(f, step, order=1)[: shape[0], : shape[1]]
    return (f - f.mean()) / (f.std() + 1e-12)


def _stain(h: np.ndarray, e: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Transmitted light of hematoxylin and eosin densities ``h``, ``e`` over ``background`` (H, W, 3)."""
    od = h[..., None] * HEMATOXYLIN + e[..., None] * EOSIN
    return background * 10.0 ** (-od)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], n: int, coverage: float) -> np.ndarray:
    """``n`` irregular fragments covering about ``coverage`` of ``shape``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    envelope = np.full(shape, -np.inf)
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(0.6, 1.4, 2) * np.sqrt(coverage / n) * np.array([h, w]) * 0.6
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        v = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        envelope = np.maximum(envelope, 1.0 - np.hypot(u, v))
    rough = envelope + 0.25 * _field(rng, shape, min(h, w) / 30) + 0.08 * _field(rng, shape, min(h, w) / 120)
    # the level that covers the asked fraction
    level = np.quantile(rough, 1.0 - coverage)
    return rough > level


def _stroke(rng: np.random.Generator, shape: tuple[int, int], width: float) -> np.ndarray:
    """Coverage (0..1, soft edged) of one pen stroke: a wobbly arc across part of the slide."""
    h, w = shape
    t = np.linspace(0, 1, 400)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    r = rng.uniform(0.15, 0.35) * min(h, w)
    a0 = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(0.6, 1.6) * np.pi
    wobble = 1 + 0.08 * np.sin(t * rng.uniform(3, 9) + rng.uniform(0, 6))
    ys = cy + r * wobble * np.sin(a0 + span * t)
    xs = cx + r * wobble * 1.3 * np.cos(a0 + span * t)
    line = np.zeros(shape, bool)
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    keep = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    # join successive points
    for y0, x0, y1, x1 in zip(iy[keep][:-1], ix[keep][:-1], iy[keep][1:], ix[keep][1:]):
        n = max(abs(y1 - y0), abs(x1 - x0)) + 1
        line[np.linspace(y0, y1, n).round().astype(int), np.linspace(x0, x1, n).round().astype(int)] = True
    distance = ndi.distance_transform_edt(~line)
    return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Slide:
    """A synthetic slide and what each of its pixels is.

    Attributes
    ----------
    rgb : ndarray of shape (H, W, 3), uint8
    truth : ndarray of shape (H, W), bool
        Tissue: fat vacuoles included; pen ink and the glass (dust on it too) excluded.
    pale, fat, pen : ndarray of shape (H, W), bool
        Pale stroma (pink or bluish) of the tissue; fat vacuoles; pen ink.
    """

    rgb: np.ndarray
    truth: np.ndarray
    pale: np.ndarray
    fat: np.ndarray
    pen: np.ndarray


def make_slide(name: str | SlideSpec, shape: tuple[int, int] = (1024, 1280), seed: int = 0) -> Slide:
    """A synthetic H&E slide and its tissue mask.

    Parameters
    ----------
    name : str or SlideSpec
        A key of :data:`SLIDES`, or a spec.
    shape : (H, W), default=(1024, 1280)
    seed : int, default=0
    """
    spec = SLIDES[name] if isinstance(name, str) else name
    rng = np.random.default_rng(seed)
    h, w = shape
    side = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    # glass: light grey, slightly tinted, vignetted, noisy
    grey = rng.uniform(222, 234)
    tint = rng.uniform(-3, 3, 3)
    radius2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    light = (1.0 - spec.vignetting * radius2 / 2.0) * (1.0 + 0.01 * _field(rng, shape, side / 8))
    background = (grey + tint)[None, None, :] * light[..., None]

    tissue = _blobs(rng, shape, spec.fragments, spec.tissue)

    # regions inside the tissue: cellular, pale pink, pale bluish (a smooth field cut at quantiles)
    region = _field(rng, shape, side / 25)
    inside = region[tissue]
    pale_cut = np.quantile(inside, 1.0 - spec.pale) if inside.size else 0.0
    pale = tissue & (region > pale_cut)
    which = _field(rng, shape, side / 18)
    bluish_cut = np.quantile(which[pale], 1.0 - spec.bluish) if pale.any() else 0.0
    bluish = pale & (which > bluish_cut)
    pink = pale & ~bluish
    cellular = tissue & ~pale

    fibres = _field(rng, shape, 1.5) * 0.5 + 0.5 * _field(rng, shape, 4)
    h_od = np.zeros(shape)
    e_od = np.zeros(shape)
    # cellular tissue: eosin 0.35-0.6 with hematoxylin background, nuclei added below
    e_od[cellular] = 0.45 + 0.08 * fibres[cellular]
    h_od[cellular] = 0.12 + 0.03 * fibres[cellular]
    # pale pink stroma: little eosin, almost no hematoxylin
    e_od[pink] = 0.075 + 0.025 * fibres[pink]
    h_od[pink] = 0.01
    # pale bluish stroma: a little hematoxylin only (myxoid, oedematous)
    h_od[bluish] = 0.07 + 0.02 * fibres[bluish]
    e_od[bluish] = 0.005

    # nuclei: dark purple dots, dense in cellular tissue, sparse in stroma
    density = np.where(cellular, 0.004, np.where(pale, 0.0004, 0.0))
    seeds = rng.random(shape) < density
    nuclei = ndi.binary_dilation(seeds, iterations=int(rng.integers(2, 4))) & tissue
    h_od[nuclei] = 0.9 + 0.15 * rng.standard_normal(int(nuclei.sum()))
    e_od[nuclei] += 0.1

    # fat: white round vacuoles (adipocytes) inside tissue, each in its own membrane: centres on a
    # jittered hexagonal grid spaced more than a diameter apart, so vacuoles never merge
    fat = np.zeros(shape, bool)
    if spec.fat > 0 and tissue.any():
        r = max(3.0, side / 110)
        spacing = 2 * r + 3
        gy, gx = np.mgrid[0:h:spacing * 0.866, 0:w:spacing]
        gx = gx + (np.round(gy / (spacing * 0.866)) % 2) * spacing / 2
        gy, gx = (gy + rng.uniform(-1, 1, gy.shape)).ravel(), (gx + rng.uniform(-1, 1, gx.shape)).ravel()
        iy, ix = np.clip(gy.round().astype(int), 0, h - 1), np.clip(gx.round().astype(int), 0, w - 1)
        deep = ndi.binary_erosion(tissue, iterations=int(r) + 2)
        inside = np.flatnonzero(deep[iy, ix])
        count = min(inside.size, int(tissue.sum() * spec.fat / (np.pi * (0.85 * r) ** 2)) + 1)
        if count:
            chosen = rng.choice(inside, count, replace=False)
            centres = np.zeros(shape, np.int64)
            centres[iy[chosen], ix[chosen]] = np.arange(1, count + 1)
            radii = np.concatenate([[0.0], r * rng.uniform(0.7, 1.0, count)])
            distance, (ny, nx) = ndi.distance_transform_edt(centres == 0, return_indices=True)
            fat = (distance < radii[centres[ny, nx]]) & tissue
    h_od[fat] = 0.0
    e_od[fat] = 0.0
    # a thin membrane around each vacuole
    rim = ndi.binary_dilation(fat) & ~fat & tissue
    e_od[rim] = np.maximum(e_od[rim], 0.2)

    img = _stain(np.clip(h_od, 0, None), np.clip(e_od, 0, None), background)

    truth = tissue.copy()

    # dust: small dark grey specks, anywhere
    for _ in range(spec.dust):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        rr = rng.uniform(0.6, 2.5) * side / 1000
        ry = rr * rng.uniform(0.5, 2)
        y0, y1 = max(0, int(cy - ry) - 1), min(h, int(cy + ry) + 2)
        x0, x1 = max(0, int(cx - rr) - 1), min(w, int(cx + rr) + 2)
        wy, wx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        speck = (wy - cy) ** 2 / ry**2 + (wx - cx) ** 2 / rr**2 < 1
        img[y0:y1, x0:x1][speck] *= rng.uniform(0.35, 0.7)  # grey: every channel alike; on tissue, still tissue

    # pen: dark green or blue ink, soft edged, mostly on the glass
    inks = {"green": np.array([0.95, 0.35, 0.55]), "blue": np.array([0.80, 0.55, 0.18])}
    pen = np.zeros(shape, bool)
    for i in range(spec.pen):
        cover = _stroke(rng, shape, width=rng.uniform(4, 9) * side / 1000)
        ink = inks["green" if i % 2 == 0 else "blue"] * rng.uniform(0.8, 1.1)
        img = img * 10.0 ** (-cover[..., None] * ink)
        pen |= cover > 0.5
    truth &= ~pen

    img += rng.normal(0, 2.0, img.shape)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Slide(rgb=rgb, truth=truth, pale=pale & truth, fat=fat & truth, pen=pen)


def score(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(Fraction of the tissue kept, fraction of the background kept) by ``mask``."""
    mask, truth = np.asarray(mask, bool), np.asarray(truth, bool)
    return float(mask[truth].mean()), float(mask[~truth].mean())
