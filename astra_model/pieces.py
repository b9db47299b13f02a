"""Work done in pieces: a generator yields between pieces and returns the result.

A chunk's denoising steps and its decoded frames are pieces, so a scheduler can run other work between
them: the ROS node keeps its live stream on time while imagined rollouts run in the gaps.
`run_to_end` runs such a generator in one go.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

T = TypeVar("T")
Pieces = Generator[None, None, T]


def run_to_end(pieces: Generator[Any, None, T]) -> T:
    """Run every piece; the generator's return value."""
    while True:
        try:
            next(pieces)
        except StopIteration as done:
            return done.value
