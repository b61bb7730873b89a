"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012): adaptive low-pass for noisy signals.

Causal, one sample at a time, irregular time steps allowed. Slow movements are smoothed hard
(cutoff near ``min_cutoff``), fast ones lightly (cutoff grows with ``beta`` x speed), so a rep's
extremes are not flattened while jitter at rest is removed.
"""

from __future__ import annotations

import math


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Scalar One Euro filter."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.02, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("cutoffs must be positive and beta non-negative")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the history (e.g. after a long loss of tracking)."""
        self._t: float | None = None
        self._x = 0.0
        self._dx = 0.0

    @property
    def value(self) -> float | None:
        return None if self._t is None else self._x

    def __call__(self, t: float, x: float) -> float:
        """Filter sample ``x`` taken at time ``t`` (seconds, increasing)."""
        if self._t is None:
            self._t, self._x, self._dx = t, x, 0.0
            return x
        dt = t - self._t
        if dt <= 0:
            return self._x
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x
