"""The listener's throttle (serve/listener.py), with time passed in instead of waited for."""

from __future__ import annotations

from itertools import pairwise

from exporter.serve.listener import Throttle


def _drive(throttle: Throttle, notices: list[float], until: float, step: float = 0.001):
    """Feed notices at their times and poll ``due`` in between; return when it acted."""
    actions = []
    pending = sorted(notices)
    now = 0.0
    while now <= until:
        while pending and pending[0] <= now:
            pending.pop(0)
            if throttle.notice(now):
                actions.append(now)
        if throttle.due(now):
            actions.append(now)
        now = round(now + step, 6)
    return actions


def test_a_lone_change_is_acted_on_at_once():
    assert _drive(Throttle(0.2), [1.0], until=2.0) == [1.0]


def test_a_burst_is_folded_and_its_last_change_still_covered():
    burst = [round(0.5 + i * 0.01, 6) for i in range(100)]  # one change every 10 ms for 1 s
    actions = _drive(Throttle(0.2), burst, until=3.0)
    assert actions[0] == 0.5  # the first change at once
    assert len(actions) <= 1 + (burst[-1] - burst[0]) / 0.2 + 1
    assert actions[-1] >= burst[-1]  # nothing announced goes without a refresh after it
    gaps = [later - earlier for earlier, later in pairwise(actions)]
    assert min(gaps) >= 0.2 - 1e-9


def test_after_a_quiet_window_the_next_change_is_immediate_again():
    actions = _drive(Throttle(0.2), [1.0, 1.05, 2.0], until=3.0)
    assert actions == [1.0, 1.2, 2.0]
