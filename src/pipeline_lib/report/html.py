"""The one set of helpers every report section renders with: escaping, numbers, cells, PNG embedding
and matplotlib figures.

Sections never write raw input text: everything passes through :func:`escape`.
Numeric cells carry their exact value in ``data-value`` (``repr(float)``) so
tests and tools read the numbers back without parsing the rounded display text.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- text and numbers


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


def float_or_nan(value: Any) -> float:
    """The value as a float (non-finite kept), NaN when it is not a number."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def count_text(value: Any) -> str:
    """A whole-number count, or "n/a"."""
    number = finite_float(value)
    return "n/a" if number is None else str(int(number))


def format_number(value: Any) -> str:
    """Four significant digits; anything non-finite or non-numeric becomes "n/a"."""
    number = finite_float(value)
    return "n/a" if number is None else f"{number:.4g}"


def fixed(value: Any, digits: int) -> str:
    """``digits`` decimals, or "n/a"."""
    number = finite_float(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


# ---------------------------------------------------------------- cells, tables, sections


def data_attributes(values: Mapping[str, Any]) -> str:
    """`` data-<key>="<repr(float)>"`` for each entry (empty for None)."""
    return "".join(f' data-{escape(key)}="{escape("" if value is None else repr(float_or_nan(value)))}"'
                   for key, value in values.items())


def number_cell(value: Any, text: str | None = None, *, css: str = "num", **data: Any) -> str:
    """A right-aligned cell showing ``text`` (default: :func:`format_number`) with the exact value in
    ``data-value`` (none when ``value`` is None) and any further ``data-*`` attributes."""
    attrs = "" if value is None else f' data-value="{escape(repr(float_or_nan(value)))}"'
    attrs += data_attributes(data)
    shown = format_number(value) if text is None else text
    return f'<td class="{css}"{attrs}>{escape(shown)}</td>'


def text_cell(value: Any) -> str:
    return f"<td>{escape(value)}</td>"


def section(heading: str, body: str, ident: str | None = None) -> str:
    ident_attr = f' id="{escape(ident)}"' if ident else ""
    return f"<section{ident_attr}><h2>{escape(heading)}</h2>\n{body}\n</section>"


# ---------------------------------------------------------------- images


def checked_png(png: bytes | str | Path, what: str = "image") -> bytes:
    """PNG bytes from bytes or a file; errors name the file (or ``what``)."""
    if isinstance(png, (bytes, bytearray)):
        data, where = bytes(png), what
    else:
        where = str(png)
        try:
            data = Path(png).read_bytes()
        except OSError as exc:
            raise InputError(f"{png}: cannot read image ({exc.strerror or exc})") from exc
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{where}: not a PNG file")
    return data


def img_tag(png: bytes | str | Path, alt: str, css: str = "grid") -> str:
    """An ``<img>`` with the PNG inline as a data URI (the report stays one file)."""
    encoded = base64.b64encode(checked_png(png, alt)).decode("ascii")
    return f'<img class="{escape(css)}" alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on cluster nodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 100, tight: bool = False) -> bytes:
    """The figure as PNG bytes, then closed. No Software tag: it would carry a URL into the report."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None},
                    **({"bbox_inches": "tight"} if tight else {}))
    finally:
        plt.close(fig)
    return buffer.getvalue()


def loss_axes_png(fig, ax, values, title: str = "", legend_size: str = "small") -> bytes:
    """Finish a losses-against-steps plot as PNG bytes: a logarithmic y axis when every finite value of
    ``values`` (an array of what was drawn) is positive, axis labels, title and legend."""
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    return figure_png(fig)
