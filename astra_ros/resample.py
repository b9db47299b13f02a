"""Zero-order-hold resampling of timestamped vectors (actions) onto other times (frames).

All times are integer nanoseconds. "Zero-order hold" means: the value at time ``t`` is the latest
sample stamped at or before ``t``; before the first sample, or when that sample is older than
``timeout_ns``, it is a caller-given neutral value.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
from numpy.typing import ArrayLike


class OutOfOrderError(ValueError):
    """A sample is stamped earlier than one already given."""


class ZeroOrderHold:
    """Online zero-order hold over a stream of ``(stamp_ns, vector)`` samples.

    Keeps the last ``max_history`` samples so that a query slightly in the past (e.g. at a frame
    stamp older than the newest command) still gets the sample that was current then.

    Args:
        neutral: ``[D]`` value returned when no sample applies; its dtype is the output dtype.
        timeout_ns: a sample older than this at query time no longer applies (None: never).
        max_history: number of most recent samples kept (>= 1).
    """

    def __init__(self, neutral: ArrayLike, timeout_ns: int | None = None, max_history: int = 256) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        if timeout_ns is not None and timeout_ns < 0:
            raise ValueError(f"timeout_ns must be >= 0 or None, got {timeout_ns}")
        self._neutral = np.array(neutral)
        self._timeout_ns = timeout_ns
        self._max_history = max_history
        self._stamps: list[int] = []
        self._values: list[np.ndarray] = []

    @property
    def last_stamp_ns(self) -> int | None:
        """Stamp of the newest sample, None before the first."""
        return self._stamps[-1] if self._stamps else None

    def push(self, stamp_ns: int, value: ArrayLike) -> None:
        """Add a sample ``[D]``; stamps must not decrease (equal stamps: the later sample wins).

        Raises:
            OutOfOrderError: ``stamp_ns`` is before the newest sample's; nothing is changed.
            ValueError: ``value`` does not have the neutral value's shape.
        """
        vector = np.array(value, dtype=self._neutral.dtype)
        if vector.shape != self._neutral.shape:
            raise ValueError(f"sample shape {vector.shape} differs from the neutral's {self._neutral.shape}")
        last = self.last_stamp_ns
        if last is not None and stamp_ns < last:
            raise OutOfOrderError(f"sample stamped {stamp_ns} ns arrived after one stamped {last} ns")
        self._stamps.append(int(stamp_ns))
        self._values.append(vector)
        if len(self._stamps) > self._max_history:
            del self._stamps[0], self._values[0]

    def sample(self, t_ns: int) -> np.ndarray:
        """Value ``[D]`` at ``t_ns``: latest sample at or before it, else (or if stale) the neutral value."""
        index = bisect_right(self._stamps, t_ns) - 1
        if index < 0 or _stale(t_ns - self._stamps[index], self._timeout_ns):
            return self._neutral.copy()
        return self._values[index].copy()


def zoh_resample(
    sample_times_ns: ArrayLike,
    values: ArrayLike,
    query_times_ns: ArrayLike,
    neutral: ArrayLike,
    timeout_ns: int | None = None,
) -> np.ndarray:
    """Vectorised zero-order hold, for offline use.

    Args:
        sample_times_ns: int ``[N]``, non-decreasing (for equal stamps the later row wins).
        values: ``[N, D]`` samples.
        query_times_ns: int ``[M]`` times to sample at, any order.
        neutral: ``[D]`` value before the first sample or when the latest one is older than
            ``timeout_ns`` (None: never times out).

    Returns:
        ``[M, D]`` array with the dtype of ``values``.

    Raises:
        OutOfOrderError: ``sample_times_ns`` decreases somewhere.
    """
    times = np.asarray(sample_times_ns, dtype=np.int64)
    queries = np.asarray(query_times_ns, dtype=np.int64)
    samples = np.asarray(values)
    fill = np.asarray(neutral, dtype=samples.dtype)
    if samples.ndim != 2 or samples.shape != (len(times), len(fill)):
        raise ValueError(f"values must be [{len(times)}, {len(fill)}], got {list(samples.shape)}")
    _check_non_decreasing(times)
    index = np.searchsorted(times, queries, side="right") - 1
    valid = index >= 0
    if timeout_ns is not None:
        valid[valid] = ~_stale(queries[valid] - times[index[valid]], timeout_ns)
    out = np.broadcast_to(fill, (len(queries), len(fill))).copy()
    out[valid] = samples[index[valid]]
    return out


def _stale(age_ns: int | np.ndarray, timeout_ns: int | None) -> bool | np.ndarray:
    # A sample exactly timeout_ns old still applies; only older ones expire.
    if timeout_ns is None:
        return False
    return age_ns > timeout_ns


def _check_non_decreasing(times: np.ndarray) -> None:
    drops = np.flatnonzero(np.diff(times) < 0)
    if drops.size:
        i = int(drops[0]) + 1
        raise OutOfOrderError(f"sample {i} is stamped {times[i]} ns, before sample {i - 1} stamped {times[i - 1]} ns")
