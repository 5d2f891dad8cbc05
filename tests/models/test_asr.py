"""ASR reference models: the seed's sizes made runnable, exact batching, and the streaming variant."""

import pytest
import torch

from speechtrt.config import asr_config
from speechtrt.errors import InputError
from speechtrt.models.asr import build_asr, frontend_lengths


@pytest.mark.parametrize("size, hidden, layers", [("small", 128, 2), ("medium", 256, 4), ("large", 512, 8)])
def test_seed_sizes(size, hidden, layers):
    m = build_asr(size)
    assert (m.hidden_dim, m.num_layers) == (hidden, layers)
    assert m.encoder.bidirectional and m.encoder.input_size == hidden // 4
    assert m.classifier.out_features == 1000  # the seed's vocab_size


def test_unknown_size_is_refused():
    with pytest.raises(InputError, match="small, medium, large, stream"):
        asr_config("huge")


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 8, 97, 100])
def test_lengths_follow_the_convolutions(t):
    m = build_asr("small")
    with torch.no_grad():
        log_probs, lengths = m(torch.randn(1, t, 80), torch.tensor([t]))
    assert log_probs.shape[1] == lengths.item() == frontend_lengths(torch.tensor([t])).item() == -(-(-(-t // 2)) // 2)


def test_padded_batch_rows_equal_each_utterance_alone():
    m = build_asr("small")
    x = torch.randn(3, 61, 80)
    lengths = torch.tensor([61, 30, 5])
    with torch.no_grad():
        batch, out_len = m(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone, alone_len = m(x[b:b + 1, :n], lengths[b:b + 1])
            assert alone_len.item() == out_len[b].item()
            assert torch.allclose(alone[0], batch[b, : alone_len.item()], atol=1e-5)
    assert torch.allclose(batch.exp().sum(-1), torch.ones(3, batch.shape[1]), atol=1e-4)  # log-probabilities


def test_streaming_chunks_equal_offline():
    m = build_asr("stream")
    assert not m.encoder.bidirectional
    x = torch.randn(2, 101, 80)
    with torch.no_grad():
        offline, lengths = m(x)
        state = m.initial_state(2)
        s = (state["ctx1"], state["ctx2"], state["h"], state["c"])
        parts = []
        for start, size in [(0, 16), (16, 4), (20, 32), (52, 16), (68, 33)]:  # multiples of 4, odd last chunk
            out, *s = m.step(x[:, start:start + size], *s)
            parts.append(out)
    chunked = torch.cat(parts, dim=1)
    assert chunked.shape == offline.shape and lengths.tolist() == [26, 26]
    assert torch.allclose(chunked, offline, atol=1e-5)
