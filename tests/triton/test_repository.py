"""The repository writer without a server: configs parse as Triton's own ModelConfig, and the GPU kind's
``tensorrt_plan`` configs agree with the plans' manifests (built here ahead of time with TensorRT-RTX)."""

from __future__ import annotations

import json

import pytest

from speechtrt.errors import InputError
from speechtrt.triton.repository import (
    Enum, RepositoryConfig, check_plan_config, export_repository, graph_model_config, render_pbtxt,
)

from tests.triton.conftest import CHECKPOINTS, MODELS

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] (Triton's ModelConfig proto) is not installed")
text_format = pytest.importorskip("google.protobuf.text_format")

DTYPE_NAMES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_render_pbtxt_is_triton_text_format():
    config = {"name": "m", "backend": "python", "max_batch_size": 4,
              "input": [{"name": "x", "data_type": Enum("TYPE_FP32"), "dims": [-1, 80]},
                        {"name": "n", "data_type": Enum("TYPE_INT64"), "dims": [1], "reshape": {"shape": []}}],
              "output": [{"name": "y", "data_type": Enum("TYPE_FP32"), "dims": [-1]}],
              "dynamic_batching": {"max_queue_delay_microseconds": 100},
              "model_transaction_policy": {"decoupled": True},
              "parameters": {"component": "asr_small", "quote": 'a "b"'}}
    parsed = text_format.Parse(render_pbtxt(config), model_config_pb2.ModelConfig())
    assert parsed.max_batch_size == 4 and list(parsed.input[0].dims) == [-1, 80]
    assert list(parsed.input[1].reshape.shape) == [] and parsed.input[1].HasField("reshape")
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 100
    assert parsed.model_transaction_policy.decoupled
    assert parsed.parameters["quote"].string_value == 'a "b"'


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "tpu"}, "kind"), ({"kind": "gpu"}, "--gpu"), ({"kind": "cpu", "gpu": "sm86"}, "--kind gpu"),
    ({"precision": "bf16"}, "precision"), ({"instances": 0}, "instances"),
])
def test_bad_settings_are_refused_before_work(kwargs, match):
    with pytest.raises(InputError, match=match):
        RepositoryConfig(**kwargs)


def test_batching_follows_where_the_graph_keeps_its_batch():
    sidecar = {"component": "tts_encoder", "dims": {"batch": {"min": 1, "opt": 8, "max": 64}},
               "inputs": [{"name": "tokens", "dtype": "int64", "shape": ["batch", "text"]}],
               "outputs": [{"name": "cross_k", "dtype": "float32", "shape": [6, "batch", 8, "text", 64]}]}
    config = graph_model_config("tts_encoder", sidecar, RepositoryConfig())
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["output"][0]["dims"] == [6, -1, 8, -1, 64]
    sidecar["outputs"] = [{"name": "memory", "dtype": "float32", "shape": ["batch", "text", 512]}]
    config = graph_model_config("tts_encoder", sidecar, RepositoryConfig(max_batch=16))
    assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [-1]


@pytest.fixture(scope="module")
def gpu_repository(tmp_path_factory, triton_artifacts):
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX (the dev extra) builds the plans")
    out = tmp_path_factory.mktemp("repo-gpu")
    return export_repository(RepositoryConfig(out=out, models=MODELS, kind="gpu", gpu="sm86", artifacts=triton_artifacts,
                                              checkpoint_dir=CHECKPOINTS))


def test_gpu_configs_agree_with_the_plans_manifests(gpu_repository):
    out = gpu_repository.out
    summary = json.loads((out / "speechtrt.json").read_text())
    assert summary["kind"] == "gpu" and summary["gpu"] == "sm86"
    plans = [m for m in gpu_repository.models if m.component is not None]
    assert {m.name for m in plans} == {"asr_small", "asr_stream_step", "tts_encoder", "tts_vocoder"}
    artifacts = json.loads((out / "speechtrt.json").read_text())["settings"]["artifacts"]
    for m in plans:
        parsed = parse(out / m.name / "config.pbtxt")
        assert parsed.platform == "tensorrt_plan" and (out / m.name / "1" / "model.plan").is_file()
        manifest = _manifest_for(artifacts, m.component)
        entry = manifest["engines"][f"{m.component}.fp32"]
        profile = {p["name"]: p for p in entry["profiles"][0]["inputs"]}
        batched = parsed.max_batch_size > 0
        states = {s.input_name: s for s in parsed.sequence_batching.state}
        # every plan input is a config input or implicit state, with the plan's dtype and dims inside its profile
        assert set(profile) == {t.name for t in parsed.input} | set(states), m.name
        for t in [*parsed.input, *states.values()]:
            name = getattr(t, "name", "") or t.input_name
            p = profile[name]
            assert model_config_pb2.DataType.Name(t.data_type) == DTYPE_NAMES[p["dtype"]], (m.name, name)
            reshaped = "reshape" in t.DESCRIPTOR.fields_by_name and t.HasField("reshape")
            dims = ([-1] if batched else []) + list(t.reshape.shape if reshaped else t.dims)
            assert len(dims) == len(p["min"]), (m.name, name)
            for d, lo, hi in zip(dims, p["min"], p["max"]):
                assert d == -1 and lo <= hi or lo == d == hi, (m.name, name, dims, p)
            if name in states:
                init = ([1] if batched else []) + list(states[name].initial_state[0].dims)
                assert all(lo <= d <= hi for d, lo, hi in zip(init, p["min"], p["max"])), (m.name, name, init)
                assert states[name].initial_state[0].zero_data
        if batched:
            assert all(p["min"][0] <= 1 and parsed.max_batch_size <= p["max"][0] for p in profile.values())
            assert parsed.HasField("dynamic_batching")


def test_streaming_step_keeps_its_state_in_triton_on_gpu(gpu_repository):
    parsed = parse(gpu_repository.out / "asr_stream_step" / "config.pbtxt")
    assert [t.name for t in parsed.input] == ["features"] and [t.name for t in parsed.output] == ["log_probs"]
    assert {(s.input_name, s.output_name) for s in parsed.sequence_batching.state} == {
        ("ctx1", "ctx1_out"), ("ctx2", "ctx2_out"), ("h", "h_out"), ("c", "c_out")}
    assert parsed.max_batch_size == 0  # h/c are [layers, batch, hidden]: Triton cannot stack sequences on axis 0
    assert parsed.sequence_batching.max_sequence_idle_microseconds > 0


def test_gpu_tts_model_runs_the_decoder_plan_in_process(gpu_repository):
    out = gpu_repository.out
    parsed = parse(out / "tts" / "config.pbtxt")
    assert parsed.backend == "python" and parsed.model_transaction_policy.decoupled
    assert parsed.parameters["backend"].string_value == "trt"
    decoder = out / "tts" / "1" / parsed.parameters["decoder"].string_value
    manifest = json.loads((decoder.parent / "manifest.json").read_text())
    assert decoder.is_file() and list(manifest["engines"]) == ["tts_decoder_step.fp32"]
    assert (out / "tts" / "1" / "model.py").is_file()


def test_a_config_that_disagrees_with_the_manifest_is_named(gpu_repository):
    m = next(m for m in gpu_repository.models if m.name == "asr_small")
    artifacts = json.loads((gpu_repository.out / "speechtrt.json").read_text())["settings"]["artifacts"]
    entry = _manifest_for(artifacts, "asr_small")["engines"]["asr_small.fp32"]
    sidecar = {"outputs": [{"name": "log_probs", "dtype": "float32"}, {"name": "output_lengths", "dtype": "int64"}]}
    assert check_plan_config(m.config, entry, sidecar) == []
    bad = json.loads(json.dumps(m.config))
    bad["input"][0]["data_type"] = "TYPE_FP16"
    bad["input"][1]["name"] = "lengths"
    bad["input"][0]["dims"] = [-1, 40]
    bad["max_batch_size"] = 4096
    problems = " | ".join(check_plan_config(bad, entry, sidecar))
    for expected in ("is TYPE_FP16", "'lengths' is not an input", "dim 2 is 40", "max_batch_size 4096",
                     "['feature_lengths'] are neither"):
        assert expected in problems, problems


def _manifest_for(artifacts_root, component):
    from pathlib import Path

    found = list(Path(artifacts_root).glob(f"*/engines/sm86/*/{component}.fp32.plan"))
    assert found, f"no plan of {component} under {artifacts_root}"
    return json.loads((found[0].parent / "manifest.json").read_text())
