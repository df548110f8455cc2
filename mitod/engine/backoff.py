"""Retry delays for failed tasks."""

import random


class Backoff:
    """Capped exponential backoff with full jitter: uniform(0, min(cap, base * 2**n))."""

    def __init__(self, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * (2 ** min(attempt, 62)))

    def delay(self, attempt: int) -> float:
        """Return the wait in seconds before retry number ``attempt + 1`` (``attempt`` from 0)."""
        return self.rng.uniform(0.0, self.ceiling(attempt))
