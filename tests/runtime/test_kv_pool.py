"""The KV-cache pool: sizes from a budget, contiguous per-layer views of the active prefix, row writes at each slot's
length, capacity growth that keeps every written row, moves."""

import pytest
import torch

from speechtrt.config import TTSConfig
from speechtrt.errors import CapacityError
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape, slots_for_budget

SMALL = PoolShape(layers=2, heads=2, head_dim=4, mel_dim=3, max_slots=3, max_frames=5, max_text=6)


def _pool(**kw):
    return KVCachePool(SMALL, past_step=kw.pop("past_step", 2), text_step=kw.pop("text_step", 2), **kw)


def test_budget_gives_slot_count_and_refuses_when_none_fits():
    c = TTSConfig()
    per_slot = PoolShape.for_model(c, 1, 250, 64).bytes_per_slot(torch.float16)
    # fp16, 250 frames, 64 tokens: 2*6*8*64*(250+64)*2 bytes of K/V + the mel buffer
    assert per_slot == 2 * (2 * 6 * 8 * 64 * (250 + 64) + 252 * 80) + 16
    assert slots_for_budget(c, 10 * per_slot + 1, 250, 64, torch.float16) == 10
    assert slots_for_budget(c, 10 * per_slot, 250, 64, torch.float16, cap=4) == 4
    with pytest.raises(CapacityError, match="holds no slot"):
        slots_for_budget(c, per_slot - 1, 250, 64, torch.float16)


def test_step_inputs_are_contiguous_per_layer_views_of_the_active_prefix():
    pool = _pool()
    pool.load([0, 1], torch.ones(2, 2, 2, 4, 4), torch.ones(2, 2, 2, 4, 4), [4, 2])
    feeds = pool.step_inputs(2)
    assert sorted(k for k in feeds if k.startswith("past_k")) == ["past_k_0", "past_k_1"]
    assert feeds["past_k_0"].shape == (2, 2, 2, 4)  # P = the past capacity: holds past 0 and the row written now
    assert feeds["cross_k_1"].shape == (2, 2, 4, 4)  # S = the text capacity: holds the longest active text
    for name, t in feeds.items():
        assert t.is_contiguous(), name  # a runtime binds it where it lies
    assert feeds["past_k_0"].data_ptr() == pool.past_k.flat[0].data_ptr()  # a view, nothing copied
    assert feeds["text_lengths"].tolist() == [4, 2]


def test_commit_writes_rows_at_each_slots_length_and_advances():
    pool = _pool()
    pool.load([0, 1], torch.zeros(2, 2, 2, 3, 4), torch.zeros(2, 2, 2, 3, 4), [3, 3])
    for step in range(3):
        n = 2 if step < 2 else 1
        pool.step_extent(n)
        k = torch.full((2, n, 2, 1, 4), float(step + 1))
        pool.commit(n, torch.full((n, 3), float(step + 1)), torch.zeros(n), k, -k)
    assert pool.past_len.tolist()[:2] == [3, 2] and pool.past_of(0) == 3
    assert pool.past_k.view(0)[0, 0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert pool.past_k.view(0)[1, 0, :2, 0].tolist() == [1.0, 2.0]
    assert pool.past_v.view(1)[0, 1, 2, 3].item() == -3.0
    assert pool.mel_of(0)[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert pool.step_inputs(2)["past_k_0"].shape[2] == 4  # past 3 + the next row, in steps of 2


def test_capacity_growth_keeps_every_written_row_and_shrinks_when_empty():
    pool = _pool(past_step=2)
    pool.load([0, 1, 2], torch.randn(2, 3, 2, 5, 4), torch.randn(2, 3, 2, 5, 4), [5, 5, 5])
    written = []
    for step in range(5):
        assert pool.step_extent(3)[0] >= step + 1
        k = torch.randn(2, 3, 2, 1, 4)
        written.append(k[:, :, :, 0])
        pool.commit(3, torch.zeros(3, 3), torch.zeros(3), k, k)
    got = torch.stack([pool.past_k.view(layer)[:3, :, :5] for layer in range(2)])  # [L, n, H, rows, D]
    assert torch.equal(got.permute(3, 0, 1, 2, 4), torch.stack(written))
    assert pool.past_k.cap == 5  # grew 2 -> 4 -> 5 (capped at max_frames)
    for slot in (2, 1, 0):
        pool.release(slot)
    assert pool.past_k.cap == 2 and pool.cross_k.cap == 2


def test_commit_refuses_a_full_slot():
    pool = _pool()
    pool.load([0], torch.zeros(2, 1, 2, 1, 4), torch.zeros(2, 1, 2, 1, 4), [1])
    z = torch.zeros(2, 1, 2, 1, 4)
    for _ in range(5):
        pool.step_extent(1)
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)
    with pytest.raises(CapacityError, match="slot 0 is full|a slot is full"):
        pool.step_extent(1)
    with pytest.raises(CapacityError, match="slot 0 is full"):
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)


def test_move_copies_state_and_frees_the_source():
    pool = _pool()
    pool.load([0, 1, 2], torch.randn(2, 3, 2, 5, 4), torch.randn(2, 3, 2, 5, 4), [5, 2, 3])
    pool.step_extent(3)
    k = torch.randn(2, 3, 2, 1, 4)
    pool.commit(3, torch.randn(3, 3), torch.rand(3), k, k)
    expect_k = [pool.past_k.view(layer)[2, :, :1].clone() for layer in range(2)]
    expect_cross = [pool.cross_k.view(layer)[2, :, :3].clone() for layer in range(2)]
    pool.move(2, 0)
    for layer in range(2):
        assert torch.equal(pool.past_k.view(layer)[0, :, :1], expect_k[layer])
        assert torch.equal(pool.cross_k.view(layer)[0, :, :3], expect_cross[layer])
    assert pool.text_len[0].item() == 3 and pool.past_of(0) == 1
    assert pool.past_of(2) == 0 and pool.text_len[2].item() == 1
    assert pool.step_extent(2) == (2, 6)  # past 1 + the next row; texts 3 and 2 under the 5-token capacity


def test_no_tensor_is_reallocated_by_steps():
    pool = _pool()
    ptrs = [t.data_ptr() for t in (*pool.past_k.flat, *pool.past_v.flat, pool.mel, pool.past_len)]
    pool.load([0], torch.zeros(2, 1, 2, 1, 4), torch.zeros(2, 1, 2, 1, 4), [1])
    z = torch.zeros(2, 1, 2, 1, 4)
    for _ in range(4):
        pool.step_extent(1)
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)
    assert ptrs == [t.data_ptr() for t in (*pool.past_k.flat, *pool.past_v.flat, pool.mel, pool.past_len)]
