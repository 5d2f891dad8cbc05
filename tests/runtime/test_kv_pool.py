"""The KV-cache pool: sizes from a budget, prefix views, row writes at each slot's length, moves."""

import pytest
import torch

from speechtrt.config import TTSConfig
from speechtrt.errors import CapacityError
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape, slots_for_budget

SMALL = PoolShape(layers=2, heads=2, head_dim=4, mel_dim=3, max_slots=3, max_frames=5, max_text=6)


def test_budget_gives_slot_count_and_refuses_when_none_fits():
    c = TTSConfig()
    per_slot = PoolShape.for_model(c, 1, 250, 64).bytes_per_slot(torch.float16)
    # fp16, 250 frames, 64 tokens: 2*6*8*64*(250+64)*2 bytes of K/V + the mel buffer
    assert per_slot == 2 * (2 * 6 * 8 * 64 * (250 + 64) + 252 * 80) + 16
    assert slots_for_budget(c, 10 * per_slot + 1, 250, 64, torch.float16) == 10
    assert slots_for_budget(c, 10 * per_slot, 250, 64, torch.float16, cap=4) == 4
    with pytest.raises(CapacityError, match="holds no slot"):
        slots_for_budget(c, per_slot - 1, 250, 64, torch.float16)


def test_step_inputs_are_views_of_the_active_prefix():
    pool = KVCachePool(SMALL)
    pool.load([0, 1], torch.ones(2, 2, 2, 4, 4), torch.ones(2, 2, 2, 4, 4), [4, 2])
    feeds = pool.step_inputs(2)
    assert feeds["past_k"].shape == (2, 2, 2, 1, 4)  # P = max(1, 0)
    assert feeds["cross_k"].shape == (2, 2, 2, 4, 4)  # S = longest active text
    assert feeds["past_k"].data_ptr() == pool.self_k.data_ptr()  # a view, nothing copied
    assert feeds["text_lengths"].tolist() == [4, 2]


def test_commit_writes_rows_at_each_slots_length_and_advances():
    pool = KVCachePool(SMALL)
    pool.load([0, 1], torch.zeros(2, 2, 2, 3, 4), torch.zeros(2, 2, 2, 3, 4), [3, 3])
    for step in range(3):
        n = 2 if step < 2 else 1
        k = torch.full((2, n, 2, 1, 4), float(step + 1))
        pool.commit(n, torch.full((n, 3), float(step + 1)), torch.zeros(n), k, -k)
    assert pool.past_len.tolist()[:2] == [3, 2] and pool.past_of(0) == 3
    assert pool.self_k[0, 0, 0, :3, 0].tolist() == [1.0, 2.0, 3.0]
    assert pool.self_k[0, 1, 0, :3, 0].tolist() == [1.0, 2.0, 0.0]
    assert pool.self_v[1, 0, 1, 2, 3].item() == -3.0
    assert pool.mel_of(0)[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert pool.step_inputs(2)["past_k"].shape[3] == 3


def test_commit_refuses_a_full_slot():
    pool = KVCachePool(SMALL)
    pool.load([0], torch.zeros(2, 1, 2, 1, 4), torch.zeros(2, 1, 2, 1, 4), [1])
    z = torch.zeros(2, 1, 2, 1, 4)
    for _ in range(5):
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)
    with pytest.raises(CapacityError, match="slot 0 is full"):
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)


def test_move_copies_state_and_frees_the_source():
    pool = KVCachePool(SMALL)
    pool.load([0, 1, 2], torch.randn(2, 3, 2, 5, 4), torch.randn(2, 3, 2, 5, 4), [5, 2, 3])
    k = torch.randn(2, 3, 2, 1, 4)
    pool.commit(3, torch.randn(3, 3), torch.rand(3), k, k)
    expect_k = pool.self_k[:, 2, :, :1].clone()
    expect_cross = pool.cross_k[:, 2, :, :3].clone()
    pool.move(2, 0)
    assert torch.equal(pool.self_k[:, 0, :, :1], expect_k) and torch.equal(pool.cross_k[:, 0, :, :3], expect_cross)
    assert pool.text_len[0].item() == 3 and pool.past_of(0) == 1
    assert pool.past_of(2) == 0 and pool.text_len[2].item() == 1
    assert pool.step_extent(2) == (1, 3)


def test_no_tensor_is_reallocated_by_steps():
    pool = KVCachePool(SMALL)
    ptrs = [t.data_ptr() for t in (pool.self_k, pool.self_v, pool.mel, pool.past_len)]
    pool.load([0], torch.zeros(2, 1, 2, 1, 4), torch.zeros(2, 1, 2, 1, 4), [1])
    z = torch.zeros(2, 1, 2, 1, 4)
    for _ in range(3):
        pool.commit(1, torch.zeros(1, 3), torch.zeros(1), z, z)
    assert ptrs == [t.data_ptr() for t in (pool.self_k, pool.self_v, pool.mel, pool.past_len)]
