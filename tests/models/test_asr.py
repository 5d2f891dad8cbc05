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


def test_trimmed_classifier_is_the_full_one_renormalised_over_the_kept_classes():
    from speechtrt.asr.lm import SEARCH_COLUMNS
    from speechtrt.models.asr import dropped_log_mass, trim_classifier

    for size in ("small", "stream"):
        model = build_asr(size, seed=0)
        trimmed = trim_classifier(model, SEARCH_COLUMNS)
        assert trimmed.classifier.out_features == len(SEARCH_COLUMNS) and model.classifier.out_features == 1000
        assert trimmed.output_columns.tolist() == SEARCH_COLUMNS.tolist()
        x = torch.randn(2, 90, 80, generator=torch.Generator().manual_seed(1))
        lengths = torch.tensor([90, 61])
        with torch.no_grad():
            full, _ = model(x, lengths)
            part, _ = trimmed(x, lengths)
        kept = full[..., SEARCH_COLUMNS]
        torch.testing.assert_close(part, kept - torch.logsumexp(kept, -1, keepdim=True), atol=1e-5, rtol=0)
        # an untrained model spreads its mass over all 1000 classes: dropping 971 of them moves log p by ~log(1000/29)
        mass = dropped_log_mass(model, [(x.numpy(), lengths.numpy())], SEARCH_COLUMNS)
        valid = [full[0], full[1, :16]]  # 61 frames -> 16 after the front end
        expected = max(float(-torch.logsumexp(f[:, SEARCH_COLUMNS], -1).min()) for f in valid)
        assert mass == pytest.approx(expected, rel=1e-5) and mass > 2.0
