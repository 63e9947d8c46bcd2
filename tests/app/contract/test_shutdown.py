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


@pytest.mark.parametrize(
    ("total", "drain", "answer_by"),
    [
        (30, 0, 24),  # uvicorn's 25 s, less 1 s to write the answers out
        (30, 5, 24),  # the drain delay, then uvicorn's 20 s less 1 s
        (2, 0, 0.75),  # a short budget keeps a quarter of uvicorn's share as the margin
        (0, 0, 0),  # nothing in flight survives the signal: answered at once
    ],
)
def test_every_request_in_flight_is_answered_before_uvicorn_cancels(total, drain, answer_by):
    """The request timeout (60 s by default) may outlast the budget: in a drain, the budget's
    answer deadline bounds every in-flight request, a margin before uvicorn's cancel."""
    budget = shutdown.split(total, drain)
    assert budget.answer_deadline == pytest.approx(answer_by)
    assert (
        budget.answer_deadline + budget.answer_margin == budget.drain_delay + budget.http_graceful
    )
    assert Settings().request_timeout_seconds > shutdown.split(30).answer_deadline


def test_a_drain_delay_longer_than_the_budget_is_a_clear_settings_error():
    with pytest.raises(SettingsError, match=r"DRAIN_DELAY_SECONDS \(40\) must not exceed"):
        Settings.from_env({"GRACEFUL_SHUTDOWN_SECONDS": "30", "DRAIN_DELAY_SECONDS": "40"})


def test_grace_period_covers_prestop_budget_and_exit():
    assert shutdown.termination_grace_period(30, 5) == 5 + 30 + shutdown.EXIT_MARGIN_SECONDS
    assert shutdown.termination_grace_period(2.5, 0) == 3 + shutdown.EXIT_MARGIN_SECONDS
