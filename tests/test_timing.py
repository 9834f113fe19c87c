"""``VFL_TEST_TIME_FACTOR`` scales the suite's deadlines that are not the property under test."""

from __future__ import annotations

import pytest

from tests.timing import ENV, scaled, time_factor


def test_factor_scales_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert scaled(30) == 30
    monkeypatch.setenv(ENV, "3")
    assert scaled(30) == 90 and time_factor() == 3
    monkeypatch.setenv(ENV, "0.1")  # never shorter than written
    assert scaled(30) == 30


def test_bad_factor_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "slow")
    with pytest.raises(ValueError, match="VFL_TEST_TIME_FACTOR='slow' is not a number"):
        scaled(1)
