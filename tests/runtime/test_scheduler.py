"""The in-flight scheduler, pure Python: admission, budgets, compaction and cancellation with tiny slot counts."""

import pytest

from speechtrt.errors import CapacityError, InputError
from speechtrt.runtime.scheduler import (
    Admission, DecodeRequest, Move, RequestState, Scheduler, SchedulerConfig,
)


def make(slots=2, queue=3, frames=10, text=8, **kw):
    return Scheduler(SchedulerConfig(max_slots=slots, max_frames=frames, max_text=text, max_queue=queue, **kw))


def req(frames, text=4, name="", stop=False):
    return DecodeRequest(text_len=text, frame_budget=frames, request_id=name, use_stop=stop)


def run_to_idle(s, stop_at=None):
    """Drive the scheduler alone; return (step, event, name) tuples."""
    events = []
    while not s.idle:
        plan = s.schedule()
        events += [(plan.step, "join", r.request_id) for r in plan.admitted]
        flags = [bool(stop_at and stop_at.get(r.request_id) == r.frames + 1) for r in plan.active]
        out = s.record_step(flags)
        events += [(plan.step, "leave", r.request_id) for r, _ in out.finished]
    return events


@pytest.mark.parametrize("frames,text,verdict", [
    (10, 8, Admission.OK), (11, 8, Admission.NEVER), (0, 8, Admission.NEVER), (5, 9, Admission.NEVER),
    (5, 0, Admission.NEVER),
])
def test_can_admit_table(frames, text, verdict):
    assert make().can_admit(req(frames, text))[0] is verdict


def test_never_fitting_request_is_refused_with_the_limit():
    with pytest.raises(InputError, match="11 frames exceed the 10 frames a slot holds"):
        make().submit(req(11))
    with pytest.raises(InputError, match="outside 1..8"):
        make().submit(req(3, text=9))


def test_full_queue_refuses_with_a_reason():
    s = make(slots=1, queue=2)
    s.submit(req(3, name="a"))
    s.submit(req(3, name="b"))
    with pytest.raises(CapacityError, match="queue is full \\(2 waiting"):
        s.submit(req(3, name="c"))
    s.schedule()  # a joins, freeing a queue place
    s.submit(req(3, name="c"))
    assert s.num_queued == 2 and s.num_active == 1


def test_admission_only_into_free_slots_and_leave_at_budget():
    s = make(slots=2, queue=5)
    for name, frames in [("a", 2), ("b", 4), ("c", 1), ("d", 2)]:
        s.submit(req(frames, name=name))
    assert s.can_admit(req(1))[0] is Admission.OK
    plan = s.schedule()
    assert [r.request_id for r in plan.admitted] == ["a", "b"] and [r.slot for r in plan.active] == [0, 1]
    assert s.can_admit(req(1))[0] is Admission.LATER
    events = [(0, "join", "a"), (0, "join", "b")]
    out = s.record_step([False, False])
    assert out.finished == [] and out.moves == []
    # continue: a leaves after 2 frames, c joins its slot at step 2, c leaves at once, d joins at step 3
    events += run_to_idle(s)
    assert events == [
        (0, "join", "a"), (0, "join", "b"),
        (1, "leave", "a"),
        (2, "join", "c"), (2, "leave", "c"),
        (3, "join", "d"), (3, "leave", "b"),
        (4, "leave", "d"),
    ]
    assert [st.active for st in s.stats] == [2, 2, 2, 2, 1]
    assert [st.queued for st in s.stats] == [2, 2, 1, 0, 0]
    assert [st.admitted for st in s.stats] == [2, 0, 1, 1, 0]
    assert [st.finished for st in s.stats] == [0, 1, 1, 1, 1]


def test_compaction_moves_the_last_slot_into_the_hole():
    s = make(slots=4, queue=4)
    for name, frames in [("a", 5), ("b", 1), ("c", 5), ("d", 5)]:
        s.submit(req(frames, name=name))
    s.schedule()
    out = s.record_step()
    assert [(r.request_id, slot) for r, slot in out.finished] == [("b", 1)]
    assert out.moves == [Move(3, 1)]
    assert [(r.request_id, r.slot) for r in s.active] == [("a", 0), ("d", 1), ("c", 2)]


def test_stop_token_finishes_only_requests_that_use_it():
    s = make(slots=2, queue=2)
    s.submit(req(10, name="stopper", stop=True))
    s.submit(req(3, name="fixed"))
    s.schedule()
    out = s.record_step([True, True])
    assert [(r.request_id, r.finish_reason) for r, _ in out.finished] == [("stopper", "stop_token")]
    assert s.active[0].request_id == "fixed" and s.active[0].slot == 0


def test_cancel_queued_now_and_active_at_the_next_boundary():
    s = make(slots=2, queue=3)
    for name in "abc":
        s.submit(req(5, name=name))
    s.schedule()
    assert s.cancel("c") and s.num_queued == 0  # queued: gone at once
    assert s.cancel("a")  # active: evicted at the next schedule
    assert not s.cancel("zzz")
    s.record_step()
    plan = s.schedule()
    assert [(r.request_id, slot) for r, slot in plan.evicted] == [("a", 0)]
    assert plan.moves == [Move(1, 0)]
    assert [r.request_id for r in plan.active] == ["b"]
    assert plan.evicted[0][0].state is RequestState.CANCELLED


def test_admission_cap_per_step():
    s = make(slots=4, queue=4, max_admit_per_step=1)
    for name in "abc":
        s.submit(req(9, name=name))
    assert [len(s.schedule().admitted) for _ in range(3)] == [1, 1, 1]
