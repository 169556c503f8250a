"""Metrics over training runs: every model is trained once per seed (``training.seeds``), and a
model's number is the mean over its runs with the standard deviation over seeds as its spread.

The spread says how much a result depends on the seed, i.e. how sure a comparison of two models
can be: :func:`separated` is the report's rule for calling one model better than another.
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


def best(spreads: Mapping[str, Spread], lower_is_better: bool) -> list[str]:
    """The names with the best mean (several when tied); empty when no name has a value."""
    known = {name: s.mean for name, s in spreads.items() if s.mean is not None}
    if not known:
        return []
    target = min(known.values()) if lower_is_better else max(known.values())
    return [name for name, mean in known.items() if mean == target]
