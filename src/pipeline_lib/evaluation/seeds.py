"""Metrics over training runs: every model is trained once per seed (``training.seeds``), and a
model's number is the mean over its runs with the standard deviation over seeds as its spread.

The spread says how much a result depends on the seed, i.e. how sure a comparison of two models
can be: :func:`separated` is the report's rule for calling one model better than another, and
:func:`mark_column` the one place that decides which value of a column of models is marked best.
Overlapping ranges of mean ± std over a few seeds are a rough check of the spread, not a
significance test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from pipeline_lib.core.numbers import finite_float


@dataclass(frozen=True)
class Spread:
    """A metric over a model's runs: mean, sample standard deviation (n − 1; None for one run)
    and the number of runs that gave a finite value."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float, ...]

    @property
    def low(self) -> float | None:
        return None if self.mean is None else self.mean - (self.std or 0.0)

    @property
    def high(self) -> float | None:
        return None if self.mean is None else self.mean + (self.std or 0.0)


def spread(values: Iterable[Any]) -> Spread:
    """Mean and standard deviation (n − 1) of the finite numbers among ``values``."""
    numbers = tuple(v for v in map(finite_float, values) if v is not None)
    n = len(numbers)
    if n == 0:
        return Spread(None, None, 0, ())
    mean = math.fsum(numbers) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in numbers) / (n - 1)) if n > 1 else None
    return Spread(mean, std, n, numbers)


def value_at(record: Mapping[str, Any] | None, path: str) -> Any:
    """``record["a"]["b"]`` for ``path`` "a.b"; None where any part is missing."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def spread_of(runs: Sequence[Mapping[str, Any]], path: str) -> Spread:
    """The spread over runs of the value at ``path`` of each run's record."""
    return spread(value_at(run, path) for run in runs)


def separated(a: Spread, b: Spread) -> bool:
    """Whether the ranges mean ± std of two models do not overlap; False when either model has fewer
    than two runs (its spread over seeds is unknown)."""
    if a.mean is None or b.mean is None or a.n < 2 or b.n < 2:
        return False
    return a.high < b.low or b.high < a.low


def shared_bound(values: Iterable[Any]) -> float | None:
    """The one value every run gives for a bound (e.g. each run's no-copy level), None when they differ
    or none is known: only a bound all runs share can decide a column."""
    numbers = [v for v in map(finite_float, values) if v is not None]
    if not numbers or any(not math.isclose(v, numbers[0], rel_tol=1e-9, abs_tol=1e-12) for v in numbers):
        return None
    return numbers[0]


@dataclass(frozen=True)
class ColumnMarks:
    """What a column of models marks: ``best`` (★), the one model the seeds separate from every other,
    or else ``level``, the models the seeds do not separate from the leading mean (≈) and ``reason``,
    a few words on why no model is marked best."""

    best: str | None
    level: tuple[str, ...] = ()
    reason: str = ""


def at_bound(spread_: Spread, bound: float | None, lower_is_better: bool) -> Spread:
    """``spread_`` with every value better than ``bound`` counted as ``bound`` (a floor for
    lower-is-better metrics, a ceiling otherwise): beyond it a value shows nothing more."""
    if bound is None:
        return spread_
    clip = max if lower_is_better else min
    return spread(clip(v, bound) for v in spread_.values)


def mark_column(spreads: Mapping[str, Spread], lower_is_better: bool, bound: float | None = None,
                bound_name: str = "bound") -> ColumnMarks:
    """The report's one rule for marking a best value in a column of models (name → spread over its
    training runs). ``bound`` is a floor (lower is better) or ceiling every run shares, the level past
    which a value means nothing better (e.g. the share of likely copies that a model which does not
    copy scores; the most accuracy a classifier already at 100 % can gain), ``bound_name`` its name.

    A model is marked best only when, with values beyond ``bound`` counted as ``bound``,
    (1) it has the best mean, (2) its range mean ± std lies clear of every other model's, both with
    two or more runs, and (3) it is not at ``bound`` itself. Otherwise ``level`` holds the models whose
    range overlaps the leading mean's (none with a single run, whose spread is unknown)."""
    clipped = {name: at_bound(s, bound, lower_is_better) for name, s in spreads.items() if s.mean is not None}
    if len(clipped) < 2:
        return ColumnMarks(None, (), "one model" if clipped else "no values")
    sign = 1.0 if lower_is_better else -1.0
    leader = min(clipped, key=lambda name: (sign * clipped[name].mean, name))
    lead = clipped[leader]
    if any(s.n < 2 for s in clipped.values()):
        return ColumnMarks(None, (), "one run: spread unknown")
    level = tuple(name for name, s in clipped.items() if name == leader or not separated(lead, s))
    level = level if len(level) > 1 else ()
    if bound is not None and math.isclose(lead.mean, bound, rel_tol=1e-9, abs_tol=1e-12):
        return ColumnMarks(None, level, f"at the {bound_name}")
    if level:
        return ColumnMarks(None, level, "ranges overlap")
    return ColumnMarks(leader, (), "")
