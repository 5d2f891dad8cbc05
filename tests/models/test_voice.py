"""The trained-voice architecture: cached step == full recompute, padding independence, checkpoints, and a tiny
random voice decoding to its stop token through the runtime's pool, scheduler and runners."""

import numpy as np
import pytest
import torch

from speechtrt.export import component
from speechtrt.models.checkpoints import load_checkpoint, save_checkpoint
from speechtrt.models.vocoder import MelConfig
from speechtrt.models.voice import VoiceConfig, VoiceTTS, build_voice
from speechtrt.runtime.kv_pool import KVCachePool, PoolShape
from speechtrt.runtime.runner import RunnerDecoderStep, TorchRunner
from speechtrt.runtime.scheduler import DecodeRequest, Scheduler, SchedulerConfig

TINY = VoiceConfig(hidden_dim=32, num_heads=2, num_layers=2, encoder_layers=1, encoder_convs=2, ffn_dim=64,
                   prenet_dim=16, postnet_channels=16, postnet_layers=3, max_text_len=32, max_frames=40,
                   mel=MelConfig(gl_iters=4))


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def tiny():
    return build_voice(TINY, seed=3)


def test_config_is_what_the_runtime_reads():
    c = VoiceConfig()
    assert c.mel_dim == c.reduction * c.n_mels == 320
    assert c.samples_per_frame == c.reduction * c.mel.hop and c.sample_rate == 16000
    assert c.head_dim * c.num_heads == c.hidden_dim
    assert VoiceConfig.from_dict(__import__("dataclasses").asdict(c)) == c


def _cached_rollout(model, tokens, lengths, inputs):
    """Feed ``inputs`` [B, T, M] through the cached step one position at a time (the runtime's loop)."""
    c = model.config
    b, t, _ = inputs.shape
    ck, cv = model.cross_kv(model.encode(tokens, lengths))
    past_k = torch.zeros(c.num_layers, b, c.num_heads, t, c.head_dim)
    past_v = torch.zeros_like(past_k)
    frames, stops = [], []
    for i in range(t):
        p = max(i, 1)
        f, s, nk, nv = model.decode_step(inputs[:, i], torch.full((b,), i), past_k[:, :, :, :p],
                                         past_v[:, :, :, :p], ck, cv, lengths)
        past_k[:, :, :, i], past_v[:, :, :, i] = nk[:, :, :, 0], nv[:, :, :, 0]
        frames.append(f)
        stops.append(s)
    return torch.stack(frames, 1), torch.stack(stops, 1)


@pytest.mark.parametrize("batch, steps", [(1, 1), (1, 7), (3, 12), (5, 30)])
def test_cached_steps_equal_the_full_causal_pass(tiny, batch, steps):
    gen = torch.Generator().manual_seed(batch * 100 + steps)
    tokens = torch.randint(4, TINY.vocab_size, (batch, 20), generator=gen)
    lengths = torch.randint(3, 21, (batch,), generator=gen)
    lengths[0] = 20
    inputs = torch.randn(batch, steps, TINY.mel_dim, generator=gen)
    inputs[:, 0] = 0
    with torch.no_grad():
        full, stop_logits, weights = tiny.teacher_forced(tokens, lengths, inputs)
        cached, stop = _cached_rollout(tiny, tokens, lengths, inputs)
    assert weights.shape == (TINY.num_layers, batch, TINY.num_heads, steps, 20)
    assert rel(cached, full) < 1e-5
    assert torch.allclose(stop, torch.sigmoid(stop_logits), atol=1e-6)
    # padded text positions get no cross-attention
    for b, n in enumerate(lengths.tolist()):
        assert float(weights[:, b, :, :, n:].abs().sum()) == 0.0


def test_padded_rows_equal_each_text_alone(tiny):
    tokens = torch.randint(4, TINY.vocab_size, (3, 15))
    lengths = torch.tensor([15, 8, 2])
    inputs = torch.randn(3, 6, TINY.mel_dim)
    with torch.no_grad():
        memory = tiny.encode(tokens, lengths)
        frames, _, _ = tiny.teacher_forced(tokens, lengths, inputs)
        for b, n in enumerate(lengths.tolist()):
            alone_memory = tiny.encode(tokens[b:b + 1, :n], lengths[b:b + 1])
            alone, _, _ = tiny.teacher_forced(tokens[b:b + 1, :n], lengths[b:b + 1], inputs[b:b + 1])
            assert rel(alone_memory[0], memory[b, :n]) < 1e-5
            assert rel(alone[0], frames[b]) < 1e-5


def test_inference_is_deterministic_and_training_is_not(tiny):
    tokens, lengths = torch.randint(4, TINY.vocab_size, (1, 9)), torch.tensor([9])
    inputs = torch.randn(1, 5, TINY.mel_dim)
    with torch.no_grad():
        a, _, _ = tiny.teacher_forced(tokens, lengths, inputs)
        b, _, _ = tiny.teacher_forced(tokens, lengths, inputs)
        assert torch.equal(a, b)  # the prenet's inference dropout is a fixed mask per position
        tiny.train()
        try:
            c, _, _ = tiny.teacher_forced(tokens, lengths, inputs)
        finally:
            tiny.eval()
    assert not torch.allclose(a, c)


def test_vocoder_turns_decoder_frames_into_audio(tiny):
    frames = torch.randn(2, 5, TINY.mel_dim)
    with torch.no_grad():
        audio = tiny.vocoder_inference(frames)
        mel = tiny.log_mel(frames)
    assert audio.shape == (2, 5 * TINY.samples_per_frame)
    assert mel.shape == (2, 5 * TINY.reduction, TINY.n_mels)
    assert torch.isfinite(audio).all()


def test_checkpoint_round_trip_rebuilds_the_voice(tmp_path, tiny):
    with torch.no_grad():
        tiny.mel_mean.fill_(-4.0)
        tiny.mel_std.fill_(2.5)
    path = save_checkpoint(tiny, tmp_path / "voice.pt", {"note": "tiny"}, half=True)
    blob = torch.load(path, weights_only=True)
    assert blob["kind"] == "voice" and blob["state_dict"]["embedding.weight"].dtype == torch.float16
    assert blob["state_dict"]["mel_mean"].dtype == torch.float32  # buffers keep their precision
    model, meta = load_checkpoint(path)
    assert isinstance(model, VoiceTTS) and model.config == TINY and meta == {"note": "tiny"}
    assert not model.training and torch.equal(model.mel_std, tiny.mel_std)
    tokens, lengths = torch.randint(4, TINY.vocab_size, (2, 7)), torch.tensor([7, 4])
    with torch.no_grad():
        ref, _ = tiny.generate(tokens, lengths, max_steps=6)
        got, _ = model.generate(tokens, lengths, max_steps=6)
    assert rel(got, ref) < 5e-2  # weights rounded to FP16 once


def _runtime_decode(model, texts: list[list[int]], arrivals: dict[int, list[int]], budget: int):
    """Decode token sequences to their stop tokens with the runtime's pieces, as the TTS service wires them:
    encoder runner → KVCachePool.load, Scheduler + RunnerDecoderStep, vocoder runner per finished request."""
    c = model.config
    encoder = TorchRunner(component("tts_encoder", c), model)
    step = RunnerDecoderStep(TorchRunner(component("tts_decoder_step", c), model))
    vocoder = TorchRunner(component("tts_vocoder", c), model)
    pool = KVCachePool(PoolShape.for_model(c, 2, budget, c.max_text_len))
    sched = Scheduler(SchedulerConfig(max_slots=2, max_frames=budget, max_text=c.max_text_len))
    results, it = {}, 0
    while it < 200:
        for j in arrivals.get(it, []):
            sched.submit(DecodeRequest(text_len=len(texts[j]), frame_budget=budget, use_stop=True,
                                       request_id=str(j), payload=j))
        plan = sched.schedule()
        for move in plan.moves:
            pool.move(move.src, move.dst)
        if plan.admitted:
            ids = [texts[r.payload] for r in plan.admitted]
            tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.int64)
            for k, x in enumerate(ids):
                tokens[k, : len(x)] = torch.tensor(x)
            lengths = torch.tensor([len(x) for x in ids])
            out = encoder.infer({"tokens": tokens, "text_lengths": lengths})
            pool.load([r.slot for r in plan.admitted], out["cross_k"], out["cross_v"], lengths.tolist())
        n = len(plan.active)
        if n:
            step.step(pool, n)
            outcome = sched.record_step((pool.stop_prob[:n] > 0.5).tolist(), 0.0)
            for req, slot in outcome.finished:
                mel = pool.mel_of(slot, req.frames)
                audio = vocoder.infer({"mel": mel[None]})["audio"][0]
                results[req.payload] = (mel, audio, req.finish_reason)
                pool.release(slot)
            for move in outcome.moves:
                pool.move(move.src, move.dst)
        it += 1
        if sched.idle and it > max(arrivals):
            break
    return results


def test_tiny_voice_decodes_to_its_stop_token_through_the_runtime():
    """A random voice whose stop head fires at text-dependent steps (its logits scaled ×50, so every decision is far
    from the threshold): staggered requests through 2 slots stop where each text stops alone (model.generate),
    with the same frames and audio; a text that never stops ends at the frame budget."""
    model = build_voice(TINY, seed=12)
    with torch.no_grad():
        model.stop_projection.weight.mul_(50.0)
        model.stop_projection.bias.mul_(50.0)
    gen = torch.Generator().manual_seed(5)
    texts = [torch.randint(4, TINY.vocab_size, (n,), generator=gen).tolist() for n in (5, 12, 9, 3)]
    budget = 30
    alone = []
    with torch.no_grad():
        for x in texts:
            frames, steps = model.generate(torch.tensor([x]), torch.tensor([len(x)]), max_steps=budget)
            n = int(steps[0])
            alone.append((frames[0, :n], model.vocoder_inference(frames[:, :n])[0], n))
    assert [n for _, _, n in alone] == [9, 30, 7, 7]
    got = _runtime_decode(model, texts, {0: [0, 1], 1: [2], 3: [3]}, budget)
    for j, (mel, audio, n) in enumerate(alone):
        r_mel, r_audio, reason = got[j]
        assert reason == ("stop_token" if n < budget else "frame_budget") and r_mel.shape == (n, TINY.mel_dim)
        assert rel(r_mel, mel) < 1e-5
        assert r_audio.shape == (n * TINY.samples_per_frame,) and rel(r_audio, audio) < 1e-3


@pytest.mark.slow
def test_decoder_step_exports_through_the_seed_component_and_matches_onnx_runtime(tmp_path, tiny):
    """The voice's cached step goes through the runtime's export component unchanged (dynamic batch, past, text)."""
    from speechtrt.pipeline import export_component

    result = export_component(component("tts_decoder_step", tiny.config), tiny, tmp_path)
    assert result.parity is not None and result.parity.ok, result.parity.worst


@pytest.mark.slow
def test_encoder_exports_with_dynamic_batch_and_text(tmp_path, tiny):
    from speechtrt.export.components import _TTSEncoder

    batch, text = torch.export.Dim("batch", min=1, max=16), torch.export.Dim("text", min=2, max=TINY.max_text_len)
    example = (torch.randint(4, TINY.vocab_size, (2, 9)), torch.tensor([9, 5]))
    path = tmp_path / "voice_encoder.onnx"
    torch.onnx.export(_TTSEncoder(tiny).eval(), example, dynamo=True, input_names=["tokens", "text_lengths"],
                      output_names=["memory", "cross_k", "cross_v"],
                      dynamic_shapes={"tokens": {0: batch, 1: text}, "text_lengths": {0: batch}},
                      opset_version=18).save(str(path))
    _assert_ort_encoder_matches(path, tiny, torch.randint(4, TINY.vocab_size, (3, 21)), torch.tensor([21, 13, 2]))


def _assert_ort_encoder_matches(path, model, tokens, lengths):
    """ONNX Runtime on the encoder graph at ``path`` equals the model's encoder (memory, cross K/V) to 1e-5."""
    import onnxruntime as ort

    from speechtrt.export.components import _TTSEncoder

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = _TTSEncoder(model)(tokens, lengths)
    got = sess.run(None, {"tokens": tokens.numpy(), "text_lengths": lengths.numpy()})
    for r, g in zip(ref, got):
        assert rel(torch.from_numpy(g), r) < 1e-5


@pytest.mark.slow
def test_griffin_lim_vocoder_parity_is_spectral_and_a_failed_graph_is_never_used(tmp_path, tiny):
    """The voice's vocoder graph is checked on its STFT magnitudes (Griffin-Lim's phase is not reproducible across
    float implementations); a graph whose recorded parity failed is refused by the pipeline, naming its sidecar."""
    import json

    from speechtrt.errors import ExportError
    from speechtrt.pipeline import ensure_graph, export_component
    from speechtrt.runtime.open import Artifacts

    comp = component("tts_vocoder", tiny.config)
    assert comp.spectral_outputs == ("audio",) and component("tts_vocoder").spectral_outputs == ()
    result = export_component(comp, tiny, tmp_path)
    parity = json.loads((tmp_path / "tts_vocoder.json").read_text())["parity"]
    assert result.parity.ok and parity["measure"] == "relative L2 of STFT magnitudes" and parity["tolerance"] == 0.02
    assert ensure_graph(comp, "fp32", "ort", Artifacts(tmp_path, model=tiny)) == tmp_path / "tts_vocoder.onnx"

    side = json.loads((tmp_path / "tts_vocoder.json").read_text())
    side["parity"]["ok"], side["parity"]["max_rel_l2"] = False, 0.5
    (tmp_path / "tts_vocoder.json").write_text(json.dumps(side))
    with pytest.raises(ExportError, match=r"tts_vocoder.onnx failed its parity check against PyTorch .*tts_vocoder.json"):
        ensure_graph(comp, "fp32", "ort", Artifacts(tmp_path, model=tiny))


@pytest.mark.slow
def test_ort_int8_leaves_the_griffin_lim_vocoder_at_fp32_and_says_so(tmp_path, tiny):
    """Griffin-Lim has fixed bases, nothing to shrink: its ``int8-ort`` graph is the FP32 graph, byte for byte, with a
    sidecar naming mode ``none``; the seed's learned vocoder keeps dynamic INT8."""
    import json

    from speechtrt.pipeline import export_component
    from speechtrt.quantize.ort_int8 import default_mode, make_ort_int8

    comp = component("tts_vocoder", tiny.config)
    assert default_mode(comp) == "none" and default_mode(component("tts_vocoder")) == "dynamic"
    export_component(comp, tiny, tmp_path)
    out = make_ort_int8(comp, tmp_path)
    assert out.read_bytes() == (tmp_path / "tts_vocoder.onnx").read_bytes()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "int8" and side["quantization"]["mode"] == "none"
    assert side["quantization"]["weights"].startswith("fp32: fixed bases")


@pytest.mark.slow
def test_fp16_set_keeps_the_griffin_lim_vocoder_at_fp32_and_says_so(tmp_path, tiny):
    """FP16 moved Griffin-Lim's audio (its phase is found by iteration): the voice's ``fp16`` vocoder graph is the
    FP32 graph, byte for byte, with a sidecar naming the method ``kept-fp32``; the seed's learned vocoder is cast."""
    import json

    from speechtrt.pipeline import export_component
    from speechtrt.quantize.precision import make_fp16

    comp = component("tts_vocoder", tiny.config)
    export_component(comp, tiny, tmp_path)
    res = make_fp16(comp, tmp_path, [])
    assert res.onnx_path.read_bytes() == (tmp_path / "tts_vocoder.onnx").read_bytes()
    side = json.loads(res.sidecar_path.read_text())
    assert side["precision"] == "fp16" and side["quantization"]["method"] == "kept-fp32"
    assert side["fp32_onnx_sha256"] == side["onnx_sha256"] and "Griffin-Lim" in side["quantization"]["reason"]


def test_regrouping_a_voice_keeps_every_weight_and_tiles_the_frame_projection(tiny):
    """A warm start at another reduction factor: every weight but the frame projection is the old one; frame j of a
    new step starts as frame j mod r_old of an old step; the regrouped voice decodes r_new frames per step."""
    from speechtrt.models.voice import regroup_voice

    r_old = tiny.config.reduction
    new = regroup_voice(tiny, 2 * r_old)
    assert new.config.reduction == 2 * r_old and new.config.mel_dim == 2 * tiny.config.mel_dim
    old_state, new_state = tiny.state_dict(), new.state_dict()
    for name, value in old_state.items():
        if not name.startswith("mel_projection."):
            assert torch.equal(new_state[name], value), name
    x = torch.randn(3, tiny.config.hidden_dim)
    old_frame, new_frame = tiny.mel_projection(x), new.mel_projection(x)
    assert torch.equal(new_frame[:, :tiny.config.mel_dim], old_frame)
    assert torch.equal(new_frame[:, tiny.config.mel_dim:], old_frame)
    new.eval()
    frames, steps = new.generate(torch.tensor([[5, 6, 7, 8]]), torch.tensor([4]), max_steps=3)
    assert frames.shape == (1, int(steps[0]), new.config.mel_dim)
    assert regroup_voice(tiny, r_old) is tiny


# ---------------------------------------------------------------- the aligned voice

ALIGNED = VoiceConfig(**{**TINY.__dict__, "aligned": True, "feedback": False})


@pytest.fixture(scope="module")
def aligned():
    return build_voice(ALIGNED, seed=4)


def test_aligned_voice_steps_equal_its_full_pass_and_padding_changes_nothing(aligned):
    """The predicted durations live inside the encoder: the cached step still equals the causal pass, a padded
    batch row equals its text alone, and without feedback the frames do not depend on the decoder's inputs."""
    gen = torch.Generator().manual_seed(9)
    tokens = torch.randint(4, ALIGNED.vocab_size, (3, 14), generator=gen)
    lengths = torch.tensor([14, 9, 3])
    inputs = torch.randn(3, 10, ALIGNED.mel_dim, generator=gen)
    with torch.no_grad():
        full, stop_logits, _ = aligned.teacher_forced(tokens, lengths, inputs)
        cached, stop = _cached_rollout(aligned, tokens, lengths, inputs)
        other, _, _ = aligned.teacher_forced(tokens, lengths, torch.randn(3, 10, ALIGNED.mel_dim, generator=gen))
        memory = aligned.encode(tokens, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = aligned.encode(tokens[b:b + 1, :n], lengths[b:b + 1])
            assert rel(alone[0], memory[b, :n]) < 1e-5
    assert rel(cached, full) < 1e-5 and torch.allclose(stop, torch.sigmoid(stop_logits), atol=1e-6)
    assert torch.equal(full, other)


def test_aligned_voice_places_each_phoneme_at_the_centre_of_its_duration(aligned):
    """Given durations, memory row i carries the position encoding of its centre (in decoder steps, shifted so that
    step t matches a phoneme centred at t + 0.5); without them the voice uses its own prediction."""
    from speechtrt.models.voice import sinusoid

    tokens, lengths = torch.tensor([[5, 9, 12, 7]]), torch.tensor([4])
    durations = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    with torch.no_grad():
        text = aligned._encode_text(tokens, lengths)
        placed, log_d = aligned.encode_timed(tokens, lengths, durations)
        predicted, _ = aligned.encode_timed(tokens, lengths)
        again, _ = aligned.encode_timed(tokens, lengths, torch.clamp(torch.exp(log_d) - 1, min=0))
    centres = torch.tensor([0.5, 1.5, 3.0, 5.0])  # ends 2, 2, 5, 6 less half a duration and half a step
    assert rel(placed - text, aligned.memory_time_scale.detach() * sinusoid(centres, ALIGNED.hidden_dim)[None]) < 1e-5
    assert log_d.shape == (1, 4) and torch.equal(predicted, again)


def test_aligning_a_voice_keeps_every_weight_and_adds_a_duration_predictor(tiny):
    from speechtrt.models.voice import align_voice

    new = align_voice(tiny)
    assert new.config.aligned and not tiny.config.aligned
    new_state = new.state_dict()
    for name, value in tiny.state_dict().items():
        assert torch.equal(new_state[name], value), name
    added = sorted(set(new_state) - set(tiny.state_dict()))
    assert added and all(k.startswith(("duration_", "memory_time")) for k in added)
    assert align_voice(new) is new


@pytest.mark.slow
def test_aligned_encoder_exports_and_matches_onnx_runtime(tmp_path, aligned):
    """The duration predictor and the running sum of durations (a product with a triangular matrix) export with
    dynamic batch and text; ONNX Runtime matches PyTorch on a padded batch."""
    from speechtrt.pipeline import export_component

    result = export_component(component("tts_encoder", aligned.config), aligned, tmp_path)
    assert result.parity is not None and result.parity.ok, result.parity.worst
    _assert_ort_encoder_matches(result.onnx_path, aligned, torch.randint(4, ALIGNED.vocab_size, (3, 17)),
                                torch.tensor([17, 6, 2]))
