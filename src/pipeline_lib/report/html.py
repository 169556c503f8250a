"""Text helpers shared by every module that renders a report section."""

from __future__ import annotations

import html
import math
from typing import Any


def escape(text: Any) -> str:
    """``text`` as HTML, quotes included (safe in attributes too)."""
    return html.escape(str(text), quote=True)


def finite_float(value: Any) -> float | None:
    """The value as a finite float, or None (booleans are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def count_text(value: Any) -> str:
    """A whole-number count, or "n/a"."""
    number = finite_float(value)
    return "n/a" if number is None else str(int(number))
