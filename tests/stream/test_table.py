"""The stream table: slot assignment, capacity refusal with its reason, and tombstones for precise errors."""

from __future__ import annotations

import pytest
import torch

from speechtrt.errors import CapacityError, InputError
from speechtrt.stream.slots import StreamSlotPool
from speechtrt.stream.table import StreamClosedError, StreamStatus, StreamTable, Tombstones, UnknownStreamError


def _table(capacity: int = 2, tombstones: int = 4) -> StreamTable:
    pool = StreamSlotPool(capacity, {"h": torch.zeros(1, 1, 3)}, {"h": 1}, max_frames=16)
    return StreamTable(pool, tombstones)


def test_open_assigns_slots_and_refuses_past_capacity_with_the_reason():
    t = _table()
    a, b = t.open(None, 0.0), t.open("mine", 0.0)
    assert (a.id, a.slot, b.id, b.slot) == ("s0", 0, "mine", 1) and t.live == 2
    with pytest.raises(CapacityError, match=r"'s1' refused: all 2 stream slots are in use \(2 open streams\); "
                                            "retry when one finishes, or raise max_streams"):
        t.open(None, 0.0)
    with pytest.raises(InputError, match="'mine' is already open"):
        t.open("mine", 0.0)
    with pytest.raises(InputError, match="stream ids are strings, got int 7"):
        t.open(7, 0.0)


def test_end_frees_the_slot_and_keeps_the_record_until_close():
    t = _table()
    s = t.open(None, 0.0)
    s.buffer.append(torch.ones(500).numpy())
    t.pool.state["h"][0, s.slot] = 1.0
    t.end(s, StreamStatus.DONE, 5.0)
    assert s.slot == -1 and t.live == 0 and t.pool.free_count == 2 and s.last_activity == 5.0
    assert not t.pool.state["h"].any() and s.buffer.count == 0  # the slot went back clean
    assert t.get(s.id) is s  # its result can still be read
    with pytest.raises(StreamClosedError, match="'s0' is finalized: it takes no more audio"):
        t.get_open(s.id)
    t.close(s, "finalized")
    with pytest.raises(StreamClosedError, match=r"'s0' is closed \(finalized\); open a new stream"):
        t.get(s.id)


@pytest.mark.parametrize("why", ["cancelled", "timed out (idle); its audio was processed",
                                 "failed in a batched step: RuntimeError: boom"])
def test_tombstones_say_why_a_stream_closed(why):
    t = _table()
    s = t.open("x", 0.0)
    t.close(s, why)  # closing a live stream frees its slot
    assert t.live == 0 and t.pool.free_count == 2 and len(t) == 0
    with pytest.raises(StreamClosedError, match=f"'x' is closed \\({why.replace('(', '.').replace(')', '.')}\\)"):
        t.get("x")
    with pytest.raises(UnknownStreamError, match="unknown stream id 'never': open\\(\\) it first"):
        t.get("never")
    assert t.open("x", 1.0).status is StreamStatus.OPEN  # a reused id starts a new life
    assert t.get("x").status is StreamStatus.OPEN


def test_the_tombstone_ring_is_bounded():
    ring = Tombstones(3)
    for i in range(5):
        ring.add(f"s{i}", f"why{i}")
    assert len(ring) == 3 and ring.get("s0") is None and ring.get("s4") == "why4"
    ring.add("s4", "again")
    assert ring.get("s4") == "again"  # newest first
    ring.forget("s4")
    assert ring.get("s4") is None
