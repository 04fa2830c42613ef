"""Brute-force oracles the tests compare bigquant's mappings with."""

from __future__ import annotations

import numpy as np


def nearest_colour(image: np.ndarray, palette: np.ndarray, step: int = 1 << 16) -> np.ndarray:
    """Index of the nearest palette colour of every pixel (lowest index on ties), by numpy broadcasting.

    ``image`` is (H, W, C) or (H, W) (one channel); the result has shape (H, W).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    pal = np.asarray(palette, dtype=np.float64).reshape(len(palette), -1)
    flat = img.reshape(-1, img.shape[-1]).astype(np.float64)
    out = np.empty(flat.shape[0], dtype=np.int64)
    for i in range(0, flat.shape[0], step):
        d = ((flat[i : i + step, None, :] - pal[None]) ** 2).sum(-1)
        out[i : i + step] = d.argmin(1)  # argmin: the first of equal minima
    return out.reshape(img.shape[:2])


def squared_error(image: np.ndarray, palette: np.ndarray) -> float:
    """Summed squared distance of every pixel to its nearest palette colour."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    labels = nearest_colour(img, palette)
    pal = np.asarray(palette, dtype=np.float64).reshape(len(palette), -1)
    return float(((img.astype(np.float64) - pal[labels]) ** 2).sum())
