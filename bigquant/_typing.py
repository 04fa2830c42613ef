"""Type aliases shared across bigquant."""

from __future__ import annotations

from typing import Literal, Union

import numpy as np

Strategy = Literal["auto", "histogram", "grid", "pixels", "minibatch"]
InitMethod = Literal["k-means++", "k-means||", "random"]
WriteMode = Literal["palette", "rgb"]
SeedLike = Union[int, np.random.Generator, np.random.RandomState, None]

STRATEGIES: tuple[str, ...] = ("auto", "histogram", "grid", "pixels", "minibatch")
INIT_METHODS: tuple[str, ...] = ("k-means++", "k-means||", "random")
