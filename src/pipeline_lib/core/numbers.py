"""Numbers read from records (JSON, tables) that may hold None, text, NaN or infinities."""

from __future__ import annotations

import math
from typing import Any


def index_number(value: float) -> int | float:
    """A slice index or position as recorded: whole numbers as integers, others to 3 decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 3)


def finite_float(value: Any) -> float | None:
    """The value as a finite float, or None (booleans are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
