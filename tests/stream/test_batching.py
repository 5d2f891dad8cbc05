"""The batching decision, case by case."""

import pytest

from speechtrt.stream.batching import BatchDecision, decide

CASES = [
    # n_ready, oldest age s, live, max_batch, max_wait s -> decision
    ((0, 0.0, 10, 8, 0.01), BatchDecision(0, None)),  # nothing ready: sleep until something changes
    ((8, 0.0, 20, 8, 0.01), BatchDecision(8, None)),  # a full batch goes at once
    ((12, 0.0, 20, 8, 0.01), BatchDecision(8, None)),  # never more than max_batch
    ((3, 0.02, 20, 8, 0.01), BatchDecision(3, None)),  # the oldest chunk waited max_wait: go with what is ready
    ((5, 0.0, 5, 8, 0.01), BatchDecision(5, None)),  # every live stream is ready: waiting cannot help
]


@pytest.mark.parametrize("args,expected", CASES)
def test_decide(args, expected):
    assert decide(*args) == expected


def test_decide_waits_for_the_oldest_deadline():
    d = decide(2, 0.004, 10, 8, 0.01)
    assert d.take == 0 and d.wait_s == pytest.approx(0.006)
