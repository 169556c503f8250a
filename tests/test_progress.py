"""core.progress: a progress line after the first step, then only when due, and always at the end."""

import logging

from pipeline_lib.core.progress import Progress


def test_lines_are_rate_limited_and_the_last_always_comes(caplog):
    now = [0.0]
    progress = Progress("features of x", 100, every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO):
        for done, t in [(10, 1.0), (20, 2.0), (30, 12.0), (40, 13.0), (100, 14.0)]:
            now[0] = t
            progress.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["features of x: 10/100 images (10.0 images/s, ETA 9 s)",
                     "features of x: 30/100 images (2.5 images/s, ETA 28 s)",
                     "features of x: 100/100 images (7.1 images/s, done)"]
