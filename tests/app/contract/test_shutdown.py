"""The shutdown budget's split: every second of GRACEFUL_SHUTDOWN_SECONDS is given out once."""

import pytest

from app.contract import shutdown
from app.serving.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("total", "drain", "expected"),
    [
        (30, 0, (0, 25, 5)),  # the batcher's close: 5 s at most
        (10, 0, (0, 8, 2)),  # ... and a fifth of a short budget
        (30, 5, (5, 20, 5)),  # the drain delay comes out of the budget first
        (20, 1.5, (1.5, 14, 4.5)),  # uvicorn takes whole seconds; the batcher the fraction
        (0, 0, (0, 0, 0)),
    ],
)
def test_split_adds_up_to_the_budget(total, drain, expected):
    budget = shutdown.split(total, drain)
    assert (budget.drain_delay, budget.http_graceful, budget.batcher_close) == expected
    assert budget.total == total
    assert isinstance(budget.http_graceful, int)


def test_a_drain_delay_longer_than_the_budget_is_a_clear_settings_error():
    with pytest.raises(SettingsError, match=r"DRAIN_DELAY_SECONDS \(40\) must not exceed"):
        Settings.from_env({"GRACEFUL_SHUTDOWN_SECONDS": "30", "DRAIN_DELAY_SECONDS": "40"})


def test_grace_period_covers_prestop_budget_and_exit():
    assert shutdown.termination_grace_period(30, 5) == 5 + 30 + shutdown.EXIT_MARGIN_SECONDS
    assert shutdown.termination_grace_period(2.5, 0) == 3 + shutdown.EXIT_MARGIN_SECONDS
