"""ONNX export: every graph matches PyTorch FP32 in ONNX Runtime; the decoder step and stream step loop exactly."""

import json

import numpy as np
import onnx
import pytest
import torch

from speechtrt.errors import ExportError, InputError
from speechtrt.export import check_parity, component, components_for, load_sidecar, relative_l2
from speechtrt.export.components import cache_input_names, per_layer_feeds
from speechtrt.files import sha256_file
from speechtrt.pipeline import export_component
from speechtrt.runtime import Artifacts, open_runner
from speechtrt.runtime.ort import ort_session
from speechtrt.vocab import COMPONENT_NAMES
from speechtrt.tts.baseline import seed_decode


def test_seven_components_by_model():
    assert COMPONENT_NAMES == ("tts_encoder", "tts_decoder_step", "tts_vocoder", "asr_small", "asr_medium",
                               "asr_large", "asr_stream_step")
    assert [c.name for c in components_for("tts")] == ["tts_encoder", "tts_decoder_step", "tts_vocoder"]
    assert [c.name for c in components_for("asr-stream")] == ["asr_stream_step"]
    with pytest.raises(InputError, match="unknown model 'asr-xl'"):
        components_for("asr-xl")


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_graph_is_valid_named_and_dynamic(onnx_dir, name):
    comp = component(name)
    graph = onnx.load(str(onnx_dir / f"{name}.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == [s.name for s in comp.inputs]
    assert [o.name for o in graph.output] == [s.name for s in comp.outputs]
    model = onnx.load(str(onnx_dir / f"{name}.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    onnx.checker.check_model(model)
    # every named dynamic axis is symbolic in the graph, not baked to the export example's size
    for spec, vi in zip(comp.inputs, graph.input):
        dims = vi.type.tensor_type.shape.dim
        for want, got in zip(spec.shape, dims):
            if isinstance(want, str):
                assert got.dim_param and not got.HasField("dim_value"), (name, spec.name, want)
            else:
                assert got.dim_value == want


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_parity_with_pytorch_at_several_shapes(onnx_dir, models, name):
    comp = component(name)
    d = comp.dims
    sizes = [
        {n: r.min for n, r in d.items()},
        {n: min(r.max, r.opt) for n, r in d.items()},
        {n: min(r.max, max(r.min, 3 + i * 7)) for i, (n, r) in enumerate(d.items())},
    ]
    graph = open_runner(comp, "ort", artifacts=Artifacts(onnx_dir=onnx_dir))
    report = check_parity(comp, models(comp.model), graph, sizes=sizes, seed=123)
    assert len(report.cases) == 3
    assert report.ok, report.to_json()
    assert report.worst <= 1e-4


def test_sidecar_records_io_ranges_and_hash(onnx_dir):
    side = load_sidecar(onnx_dir / "tts_decoder_step.onnx")
    assert side["onnx_sha256"] == sha256_file(onnx_dir / "tts_decoder_step.onnx")
    names = [i["name"] for i in side["inputs"]]
    assert names[:3] == ["prev_frame", "past_len", "text_lengths"] and names[3:] == cache_input_names(6)
    past_k = next(i for i in side["inputs"] if i["name"] == "past_k_5")
    assert past_k["dtype"] == "float32" and past_k["shape"] == ["batch", 8, "past", 64]
    assert past_k["min"] == [1, 8, 1, 64] and past_k["max"] == [256, 8, 1000, 64]
    assert side["exporter"] == "dynamo" and side["opset"] >= 17
    assert load_sidecar(onnx_dir / "asr_large.onnx")["exporter"] == "torchscript"


def test_decoder_step_loop_in_onnx_runtime_equals_full_recompute(onnx_dir, models):
    """200 frames through tts_encoder + tts_decoder_step (ORT, KV cache) == the causal full-recompute decode."""
    m = models("tts")
    c = m.config
    frames = 200
    tokens = torch.randint(32, 127, (2, 23), generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([23, 11])
    enc = ort_session(onnx_dir / "tts_encoder.onnx")
    step = ort_session(onnx_dir / "tts_decoder_step.onnx")
    _, cross_k, cross_v = enc.run(None, {"tokens": tokens.numpy(), "text_lengths": lengths.numpy()})
    cache_k = np.zeros((c.num_layers, 2, c.num_heads, frames, c.head_dim), np.float32)
    cache_v = np.zeros_like(cache_k)
    prev = np.zeros((2, c.mel_dim), np.float32)
    out = []
    for t in range(frames):
        p = max(t, 1)
        frame, stop, new_k, new_v = step.run(None, {k: np.ascontiguousarray(v) for k, v in per_layer_feeds({
            "prev_frame": prev, "past_len": np.full(2, t, np.int64), "text_lengths": lengths.numpy(),
            "past_k": cache_k[:, :, :, :p], "past_v": cache_v[:, :, :, :p], "cross_k": cross_k, "cross_v": cross_v,
        }, c.num_layers).items()})
        cache_k[:, :, :, t], cache_v[:, :, :, t] = new_k[:, :, :, 0], new_v[:, :, :, 0]
        prev = frame
        out.append(frame)
        assert stop.shape == (2,) and np.all((stop >= 0) & (stop <= 1))
    onnx_mel = np.stack(out, axis=1)
    for b, n in enumerate(lengths.tolist()):
        with torch.no_grad():
            ref, _ = seed_decode(m, m.encode_text(tokens[b:b + 1, :n]), n_frames=frames)
        assert relative_l2(onnx_mel[b], ref[0].numpy()) <= 1e-4


def test_stream_step_over_chunks_equals_offline_forward(onnx_dir, models):
    m = models("asr-stream")
    x = torch.randn(3, 150, 80, generator=torch.Generator().manual_seed(3))
    sess = ort_session(onnx_dir / "asr_stream_step.onnx")
    state = {k: v.numpy() for k, v in m.initial_state(3).items()}
    parts = []
    for start in range(0, 150, 16):  # nine chunks of 16 frames, then a last chunk of 6
        log_probs, *new_state = sess.run(None, {"features": x[:, start:start + 16].numpy(), **state})
        state = dict(zip(("ctx1", "ctx2", "h", "c"), new_state))
        parts.append(log_probs)
    with torch.no_grad():
        offline, lengths = m(x)
    chunked = np.concatenate(parts, axis=1)
    assert chunked.shape == tuple(offline.shape) and lengths.tolist() == [38] * 3
    assert relative_l2(chunked, offline.numpy()) <= 1e-4


def test_mismatched_weights_fail_parity(tmp_path, models):
    comp = component("tts_vocoder")
    m = models("tts")
    result = export_component(comp, m, tmp_path)
    assert result.parity.ok and json.loads(result.sidecar_path.read_text())["parity"]["ok"]
    changed = type(m)(m.config).eval()  # same architecture, other random weights
    report = check_parity(comp, changed, open_runner(comp, "ort", artifacts=Artifacts(onnx_dir=tmp_path)))
    assert not report.ok and report.worst > 0.1


def test_export_raises_naming_the_component_when_parity_misses(tmp_path, models, monkeypatch):
    """With a zero tolerance the real (tiny, nonzero) float error must fail the export, naming the graph."""
    monkeypatch.setattr("speechtrt.export.parity.PARITY_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match=r"tts_vocoder: ONNX Runtime differs from PyTorch by relative L2"):
        export_component(component("tts_vocoder"), models("tts"), tmp_path)
    assert json.loads((tmp_path / "tts_vocoder.json").read_text())["parity"]["ok"] is False


def test_unwritable_output_folder_is_a_clear_error(tmp_path, models):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write to output folder"):
        export_component(component("asr_small"), models("asr-small"), blocker / "sub")
