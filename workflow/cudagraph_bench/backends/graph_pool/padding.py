"""The pool's padding rule, without torch (the figures import it too).

A batch of n sequences runs the graph of the smallest captured size >= n, its rows n.. padded;
above the largest captured size it runs eagerly, unpadded.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def validate_capture_sizes(sizes) -> list[int]:
    """Sorted capture sizes; ValueError for an empty list, a non-integer, a size < 1 or a repeat."""
    if not isinstance(sizes, list | tuple) or not sizes:
        raise ValueError(f"capture_sizes must be a non-empty list of positive integers, got {sizes!r}")
    for s in sizes:
        if not isinstance(s, int) or isinstance(s, bool) or s < 1:
            raise ValueError(f"capture_sizes must hold positive integers, got {s!r} in {sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"capture_sizes lists a size twice: {sizes!r}")
    return sorted(sizes)


def padded_size(n: int, sizes: Sequence[int]) -> int | None:
    """The captured size a batch of n runs at (sizes sorted ascending), or None: eager, above the largest."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n!r}")
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


def padding_waste(n: int, sizes: Sequence[int]) -> float | None:
    """Fraction of the padded batch's compute spent on padding rows (37 -> 64: 27/64 = 0.42); None
    above the largest size (eager: no padding, no graph)."""
    p = padded_size(n, sizes)
    return None if p is None else 1 - n / p
