"""Progress lines for long loops (feature extraction, sampling): "what: done/total (rate, ETA)".

A line is logged after the first step, then at most every ``every_s`` seconds, and always at the
end, so a log shows that a job is alive and how long it has left without flooding; the clock only decides when to log,
never what is computed.
"""

from __future__ import annotations

import logging
import time


class Progress:
    def __init__(self, what: str, total: int, *, unit: str = "images", every_s: float = 10.0,
                 log: logging.Logger | None = None, clock=time.monotonic):
        self.what, self.total, self.unit, self.every_s = what, int(total), unit, every_s
        self.log = log or logging.getLogger(__name__)
        self.clock = clock
        self.started = clock()
        self.last = float("-inf")  # the first update is always logged

    def update(self, done: int) -> None:
        """Record that ``done`` of ``total`` are finished; log when due or finished."""
        now = self.clock()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        tail = "done" if done >= self.total else f"ETA {eta:.0f} s"
        self.log.info("%s: %d/%d %s (%.1f %s/s, %s)", self.what, done, self.total, self.unit, rate, self.unit, tail)
