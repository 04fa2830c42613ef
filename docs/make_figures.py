"""Make the README's walkthrough figures under docs/.

Run from anywhere with the project's environment::

    .venv/bin/python docs/make_figures.py

It writes ``docs/walkthrough_quantized.png`` (the original photo next to its 8- and
16-colour versions) and ``docs/walkthrough_centroids.png`` (the photo's pixels and the
16 centroids, in RGB space), using matplotlib's bundled ``grace_hopper.jpg`` and a fixed
seed, so the figures are reproducible.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.cbook
import matplotlib.pyplot as plt

from bigquant import image, model

DOCS = Path(__file__).resolve().parent
RANDOM_STATE = 0
log = logging.getLogger("make_figures")
DPI = 80


def main() -> None:
    """Write the two figures and log where they went."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    img = image.load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    img.title = "original"
    q8, _, _ = model.quantize_image(img, 8, random_state=RANDOM_STATE)
    q16, km16, _ = model.quantize_image(img, 16, random_state=RANDOM_STATE)

    fig = image.display_images(img, q8, q16, figsize=(12, 4.6))
    out = DOCS / "walkthrough_quantized.png"
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", out)

    fig = plt.figure(figsize=(12, 4.6))
    image.plot_rgb_vector(
        img.rgb_vector, title="the photo's pixels", max_points=8000,
        ax=fig.add_subplot(1, 2, 1, projection="3d"),
    )
    image.plot_rgb_vector(
        km16.cluster_centers_, title="k = 16 centroids", alpha=1, s=80,
        ax=fig.add_subplot(1, 2, 2, projection="3d"),
    )
    fig.tight_layout()
    out = DOCS / "walkthrough_centroids.png"
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
