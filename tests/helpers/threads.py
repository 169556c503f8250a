"""One torch thread: CPU kernels may split a sum differently by thread count, so seeded results
are only repeatable at a fixed count (and one thread per pytest worker is fastest on 2 cores)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_torch_thread(flush_denormal: bool = False):
    """One thread inside; with `flush_denormal`, denormals flushed as the trainer does on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
