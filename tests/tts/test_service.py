"""The TTS service: in-flight output equals decoding alone, edge cases, cancellation, the ORT backend."""

import json
from importlib import resources

import numpy as np
import pytest
import torch

from speechtrt.config import FrameRule
from speechtrt.errors import CapacityError, InputError
from speechtrt.export import relative_l2
from speechtrt.models.text import normalize_tts_text
from speechtrt.tts.baseline import seed_decode
from speechtrt.tts.service import ServiceConfig, TTSService, split_text

SMALL = dict(max_slots=3, max_frames=40, max_text=48, threads=1)


@pytest.fixture(scope="module")
def service(tts_model):
    svc = TTSService(tts_model, ServiceConfig(**SMALL))
    yield svc
    svc.close()


def test_single_request_matches_the_seed_full_recompute(service, tts_model):
    res = service.synthesize("Hello world!", n_frames=12)
    with torch.no_grad():
        tokens = torch.tensor([[ord(c) for c in "hello world!"]])
        mel, _ = seed_decode(tts_model, tts_model.encode_text(tokens), n_frames=12)
        audio = tts_model.vocoder_inference(mel)
    assert res.mel.shape == (12, 80) and res.frames == 12 and res.finish_reason == "frame_budget"
    assert relative_l2(res.mel, mel[0].numpy()) < 1e-5
    assert relative_l2(res.audio, audio[0].numpy()) < 1e-5
    assert res.audio.shape == (12 * tts_model.config.samples_per_frame,)


def test_in_flight_output_equals_each_request_alone(service):
    """Mixed lengths and staggered arrivals through 3 slots give each request its solo output."""
    jobs = [("hi", 5), ("good morning, how are you?", 17), ("abc def", 9), ("the quick brown fox", 13),
            ("a", 3), ("lazy dog.", 11)]
    alone = [service.synthesize(t, n_frames=n) for t, n in jobs]
    handles, arrivals = [], {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> job indices joining
    step = 0
    while step < 8 or not service.idle:
        for j in arrivals.get(step, []):
            handles.append((j, service.submit(jobs[j][0], n_frames=jobs[j][1])))
        service.step()
        step += 1
    service.run_until_idle()
    stats = service.scheduler.stats[-step:]
    assert max(s.active for s in stats) == 3 and max(s.queued for s in stats) >= 1  # slots were the limit
    for j, h in handles:
        got = h.result()
        assert got.frames == jobs[j][1]
        assert relative_l2(got.mel, alone[j].mel) < 1e-5, jobs[j]
        assert relative_l2(got.audio, alone[j].audio) < 1e-5, jobs[j]


def test_frame_rule_sets_lengths(tts_model):
    svc = TTSService(tts_model, ServiceConfig(**{**SMALL, "max_frames": 100},
                                              frame_rule=FrameRule(frames_per_char=2, min_frames=4)))
    res = svc.synthesize_batch(["ab", "hello there"])
    assert [r.frames for r in res] == [4, 22]
    svc.close()


@pytest.mark.parametrize("text,match", [
    ("", "text is empty"), ("   \n", "text is empty"), ("\u65e5\u672c", "outside the TTS vocabulary"),
])
def test_bad_text_is_refused_clearly(service, text, match):
    with pytest.raises(InputError, match=match):
        service.submit(text)


def test_non_ascii_is_normalised_as_documented(service):
    a = service.synthesize("Caf\u00e9 \u2014 na\u00efve \u201cok\u201d", n_frames=4)
    b = service.synthesize('caf\u00e9 - na\u00efve "ok"', n_frames=4)
    assert np.array_equal(a.mel, b.mel)


def test_long_text_is_split_at_sentence_boundaries(tts_model):
    # 40 frames per slot at 2 frames/char: at most 20 characters per part
    svc = TTSService(tts_model, ServiceConfig(**SMALL, frame_rule=FrameRule(frames_per_char=2, min_frames=2)))
    res = svc.synthesize("One two three. Four five! Six seven eight.")
    assert res.parts == 3 and res.frames == 2 * (len("one two three.") + len("four five!") + len("six seven eight."))
    assert split_text(normalize_tts_text("Aa. Bb. Cc dd."), 7) == ["aa. bb.", "cc dd."]  # takes normalised text
    with pytest.raises(InputError, match="exceeds the maximum of 20"):
        svc.submit("this sentence has no boundary and is long")
    svc.close()
    refusing = TTSService(tts_model, ServiceConfig(**SMALL, long_text="refuse",
                                                   frame_rule=FrameRule(frames_per_char=2, min_frames=2)))
    with pytest.raises(InputError, match="the maximum per request is 20"):
        refusing.submit("One two three. Four five! Six seven eight.")
    refusing.close()


def test_explicit_frames_beyond_a_slot_are_refused(service):
    with pytest.raises(InputError, match="41 frames exceed the 40 frames a slot holds"):
        service.submit("hello", n_frames=41)


def test_cancellation_frees_the_slot(service):
    keep = service.submit("keep me", n_frames=6)
    drop = service.submit("drop me", n_frames=30)
    service.step()
    service.step()
    assert service.cancel(drop.request_id)
    service.run_until_idle()
    assert drop.future.cancelled() and keep.result().frames == 6
    assert service.pool.past_of(0) == 0 and service.scheduler.idle
    assert not service.cancel(drop.request_id)


def test_bounded_queue_refuses(tts_model):
    svc = TTSService(tts_model, ServiceConfig(**{**SMALL, "max_slots": 1}, max_queue=2))
    svc.submit("a", n_frames=2)
    svc.submit("b", n_frames=2)
    with pytest.raises(CapacityError, match="queue is full"):
        svc.submit("c", n_frames=2)
    svc.run_until_idle()
    svc.close()


@pytest.mark.slow
def test_ort_backend_matches_torch(tts_model, tts_onnx_dir, service):
    svc = TTSService(tts_model, ServiceConfig(**SMALL, backend="ort", onnx_dir=str(tts_onnx_dir)))
    texts = ["hello world", "in-flight batching"]
    got = [svc.submit(t, n_frames=n) for t, n in zip(texts, (8, 14))]
    svc.run_until_idle()
    for h, t, n in zip(got, texts, (8, 14)):
        ref = service.synthesize(t, n_frames=n)
        assert relative_l2(h.result().mel, ref.mel) < 1e-5
    svc.close()


def test_sample_texts_ship_with_the_package():
    data = json.loads(resources.files("speechtrt.tts").joinpath("sample_texts.json").read_text())
    assert set(data["test_categories"]) == {"short", "medium", "long"}
    assert len(data["texts"]) == 10


@pytest.mark.gpu
def test_cuda_fp16_graphs_service_tracks_fp32_and_batches_exactly(tts_model, service):
    """FP16 + static KV + CUDA graphs: mel SNR >= 30 dB against FP32; in-flight equals alone on the same backend."""
    from speechtrt.bench.tts_bench import mel_snr_db

    svc = TTSService(tts_model, ServiceConfig(**SMALL, device="cuda", precision="fp16"))
    jobs = [("hello world", 20), ("good morning to you", 33), ("abc", 9)]
    alone = [svc.synthesize(t, n_frames=n) for t, n in jobs]
    handles = [svc.submit(t, n_frames=n) for t, n in jobs]
    svc.run_until_idle()
    for (t, n), a, h in zip(jobs, alone, handles):
        assert mel_snr_db(service.synthesize(t, n_frames=n).mel, a.mel) >= 30
        assert mel_snr_db(a.mel, h.result().mel) >= 60  # batched fp16 rounding only
    svc.close()
