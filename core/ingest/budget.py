"""Bound how much pixel memory ingest's verification decodes hold at once.

Each worker asks the :class:`DecodeGate` for the bytes its decode will need before it decodes
and gives them back after; workers wait while the bytes in flight would pass the budget. One
file larger than the whole budget still runs, alone, so nothing waits forever: the per-frame
pixel budget (``max_pixels``) is what bounds that one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Four 8k x 8k 8-bit images, or one 16-bit 8k x 8k DICOM frame with room to spare.
DEFAULT_DECODE_BUDGET_BYTES = 512 * 1024**2


class DecodeGate:
    """A byte budget shared by threads: ``with gate.hold(n_bytes): decode()``.

    budget_bytes : int > 0, the most decode bytes in flight at once (a single request larger
        than the budget waits until nothing else is in flight, then runs alone).
    """

    def __init__(self, budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES) -> None:
        if not isinstance(budget_bytes, int) or budget_bytes < 1:
            raise ValueError(f"budget_bytes={budget_bytes!r} must be a positive integer")
        self.budget_bytes = budget_bytes
        self.in_flight = 0
        self.peak = 0  # most bytes ever held at once, for tests and benchmarks
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, n_bytes: int) -> Iterator[None]:
        n_bytes = max(0, int(n_bytes))
        with self._condition:
            while self.in_flight and self.in_flight + n_bytes > self.budget_bytes:
                self._condition.wait()
            self.in_flight += n_bytes
            self.peak = max(self.peak, self.in_flight)
        try:
            yield
        finally:
            with self._condition:
                self.in_flight -= n_bytes
                self._condition.notify_all()
