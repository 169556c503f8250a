"""bench/learning_runs.py's verdict: issue 23's bar (final FID at most half the untrained FID)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from learning_runs import FID_SHARE_BAR, verdict  # noqa: E402


def test_the_bar_is_half_the_untrained_fid():
    assert FID_SHARE_BAR == 0.5
    assert verdict(300.0, 150.0) == {"fid_share": 0.5, "meets_fid_bar": True}
    assert verdict(300.0, 150.1)["meets_fid_bar"] is False


@pytest.mark.parametrize("untrained, final", [(float("nan"), 10.0), (300.0, float("nan")), (0.0, 0.0),
                                              (float("inf"), 10.0)])
def test_a_broken_fid_never_meets_the_bar(untrained, final):
    assert verdict(untrained, final)["meets_fid_bar"] is False
