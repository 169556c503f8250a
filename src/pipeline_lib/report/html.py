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

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.numbers import finite_float  # noqa: F401 - the sections take it from here

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- text and numbers


def escape(text: Any) -> str:
    """``text`` as HTML, quotes included (safe in attributes too)."""
    return html.escape(str(text), quote=True)


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


def format_mean_std(mean: Any, std: Any) -> str:
    """"mean ± std" with the spread to two significant digits and the mean to the same decimal place
    (the report's one rule for a value with its uncertainty); without a spread, :func:`format_number`."""
    m, s = finite_float(mean), finite_float(std)
    if m is None:
        return "n/a"
    if s is None or s <= 0:
        return format_number(m) if s is None else f"{format_number(m)} ± 0"
    decimals = 1 - math.floor(math.log10(s))
    if decimals > 8 or abs(m) >= 1e7:
        return f"{m:.4g} ± {s:.2g}"
    if decimals <= 0:
        step = 10 ** (-decimals)
        return f"{round(m / step) * step:.0f} ± {round(s / step) * step:.0f}"
    return f"{m:.{decimals}f} ± {s:.{decimals}f}"


def format_percent(fraction: Any) -> str:
    """A fraction in [0, 1] as a percentage with one decimal ("12.5 %"), or "n/a"."""
    number = finite_float(fraction)
    return "n/a" if number is None else f"{100 * number:.1f} %"


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


def spread_cell(spread, *, key: str = "", scale: float = 1.0, percent: bool = False, mark: str = "",
                css: str = "num") -> str:
    """A cell for a metric over training runs (an ``evaluation.seeds.Spread``): "mean ± std" over seeds
    (the mean alone for one run), exact values in ``data-value``/``data-std`` and the run count in
    ``data-n``. ``scale`` multiplies what is shown (e.g. KID × 10³), ``percent`` shows fractions as %."""
    factor = 100.0 * scale if percent else scale
    mean = None if spread.mean is None else spread.mean * factor
    std = None if spread.std is None else spread.std * factor
    if mean is None:
        text = "n/a"
        css += " na"
    elif percent and std is None:
        text = format_percent(spread.mean * scale)
    else:
        text = format_mean_std(mean, std) + (" %" if percent else "")
    attrs = f' data-metric="{escape(key)}"' if key else ""
    attrs += f' data-value="{escape(repr(float_or_nan(spread.mean)))}"'
    attrs += f' data-std="{escape(repr(float_or_nan(spread.std)))}" data-n="{spread.n}"'
    return f'<td class="{escape(css)}"{attrs}>{escape(text + mark)}</td>'


def section(heading: str, body: str, ident: str | None = None, level: int = 2) -> str:
    ident_attr = f' id="{escape(ident)}"' if ident else ""
    return f"<section{ident_attr}><h{level}>{escape(heading)}</h{level}>\n{body}\n</section>"


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


def compact_png(data: bytes) -> bytes:
    """The same picture in fewer bytes, without loss: 8-bit grey when every pixel is grey, no alpha
    channel when it is fully opaque, maximum deflate compression (the original when that is not
    smaller). Matplotlib writes RGBA even for grey pictures."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return data
    if image.ndim == 3 and image.shape[2] == 4 and (image[..., 3] == 255).all():
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 3 and (image[..., 0] == image[..., 1]).all() \
            and (image[..., 1] == image[..., 2]).all():
        image = image[..., 0]
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return encoded.tobytes() if ok and len(encoded) < len(data) else data


def data_uri(png: bytes | str | Path, what: str = "image") -> str:
    return "data:image/png;base64," + base64.b64encode(compact_png(checked_png(png, what))).decode("ascii")


def img_tag(png: bytes | str | Path, alt: str, css: str = "grid") -> str:
    """An ``<img>`` with the PNG inline as a data URI (the report stays one file)."""
    return f'<img class="{escape(css)}" alt="{escape(alt)}" src="{data_uri(png, alt)}">'


def zoomable_img(png: bytes | str | Path, alt: str, css: str = "thumb") -> str:
    """A thumbnail that a click shows at full size over the page (and a second click closes);
    no script: a hidden checkbox toggles the CSS, and the picture is embedded once."""
    return (f'<label class="zoom" title="click to enlarge"><input type="checkbox" aria-label="enlarge {escape(alt)}">'
            f"{img_tag(png, alt, css)}</label>")


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
    ``values`` (an array of what was drawn) is positive, axis labels, title and legend, the legend to
    the right of the axes so that it never covers a curve."""
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return figure_png(fig, tight=True)


def plain_text(value: Any) -> str:
    """Display text for a non-metric value (numbers rounded, dicts as k=v lists)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if is_integer(value):
        return str(int(value))
    if isinstance(value, float) or _is_numpy_number(value):
        return format_number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={plain_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " × ".join(plain_text(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(
            plain_text(v) for v in value
        )
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (_is_numpy_number(value) and value.dtype.kind in "iu")


def _is_numpy_number(value: Any) -> bool:
    return hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iuf"


def figures(images: Mapping[str, Path | bytes], what: str, css: str = "grid") -> str:
    if not images:
        return f"<p>No {escape(what)} images.</p>"
    return "\n".join(f"<figure><figcaption>{escape(str(name))}</figcaption>"
                     f"{img_tag(png, f'{what} {name}', css)}</figure>" for name, png in images.items())
