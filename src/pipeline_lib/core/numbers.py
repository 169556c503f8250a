"""Numbers read from records (JSON, tables) that may hold None, text, NaN or infinities."""

from __future__ import annotations

import math
from typing import Any


def finite_float(value: Any) -> float | None:
    """The value as a finite float, or None (booleans are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
