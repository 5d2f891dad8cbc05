"""Build fixtures: reduced-precision graphs made here, and engines compiled once per session with TensorRT-RTX.

The FP16 and INT8 graphs are made with plain tools so these tests do not depend on the quantization layer:

* FP16: onnxconverter-common's ``convert_float_to_float16`` (``keep_io_types=True``), with the LSTMs that have
  ``sequence_lens`` kept in FP32 (TensorRT's ONNX parser cannot import those in FP16; see test_engine.py) and one
  repair: the converter retypes the outputs of ``Cast(to=FLOAT)`` nodes to FP16 without changing their ``to``
  attribute, which leaves an invalid graph; those casts are pointed at FP16.
* INT8: a QuantizeLinear/DequantizeLinear pair on every float input of MatMul, Gemm, Conv and ConvTranspose, with a
  symmetric per-tensor scale ``max|x| / 127`` measured on the tensor itself (weights) or in ONNX Runtime on the
  component's own random inputs (activations).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

REDUCED_COMPONENTS = ("asr_small", "asr_stream_step", "tts_vocoder")
QUANTIZED_INPUTS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1), "ConvTranspose": (0, 1)}
GPU = "sm86"


def to_fp16(src: Path, dst: Path, keep_packed_lstm: bool = True) -> None:
    """FP16 copy of ``src``; with ``keep_packed_lstm`` the LSTMs that have ``sequence_lens`` stay FP32."""
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    packed = [n.name for n in model.graph.node if n.op_type == "LSTM" and len(n.input) > 4 and n.input[4]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=packed if keep_packed_lstm else None
        )
    retyped = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    for node in half.graph.node:
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT and retyped.get(node.output[0]) == TensorProto.FLOAT16:
                to.i = TensorProto.FLOAT16
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(dst))


def to_int8_qdq(src: Path, dst: Path, feeds: dict[str, np.ndarray]) -> int:
    """Write ``dst`` with Q/DQ pairs on every quantizable input; return how many tensors were quantized."""
    import onnxruntime as ort

    model = onnx.load(str(src))
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    uses = [(node, idx) for node in graph.node for idx in QUANTIZED_INPUTS.get(node.op_type, ())
            if idx < len(node.input) and node.input[idx]]
    names = sorted({node.input[idx] for node, idx in uses})

    activations = [n for n in names if n not in weights]
    probe = onnx.load(str(src))
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in activations)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    amax = {n: float(np.abs(values[n]).max()) for n in activations}
    amax.update({n: float(np.abs(numpy_helper.to_array(weights[n])).max()) for n in names if n in weights})

    pairs = {}
    for n in names:
        scale = helper.make_tensor(f"{n}_qdq_scale", TensorProto.FLOAT, [], [max(amax[n], 1e-8) / 127.0])
        zero = helper.make_tensor(f"{n}_qdq_zero", TensorProto.INT8, [], [0])
        graph.initializer.extend([scale, zero])
        pairs[n] = [
            helper.make_node("QuantizeLinear", [n, scale.name, zero.name], [f"{n}_q"], name=f"{n}/QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{n}_q", scale.name, zero.name], [f"{n}_dq"],
                             name=f"{n}/DequantizeLinear"),
        ]
    for node, idx in uses:
        node.input[idx] = f"{node.input[idx]}_dq"
    ordered = []
    for node in graph.node:  # each pair goes right before the first node that reads it (topological order)
        for name in node.input:
            if name.endswith("_dq") and name[:-3] in pairs:
                ordered.extend(pairs.pop(name[:-3]))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return len(names)


def rtx_flavour():
    """TensorRT-RTX, the flavour that compiles for a chosen architecture on any machine (CI has no GPU)."""
    from speechtrt.engines.flavour import find_flavour

    return find_flavour("tensorrt-rtx")


def write_sidecar(fp32_sidecar: Path, precision: str, graph: Path) -> None:
    """The FP32 sidecar plus ``precision``, describing ``graph`` (the file naming contract of `speechtrt calibrate`)."""
    data = json.loads(fp32_sidecar.read_text())
    data.update(precision=precision, onnx=graph.name, onnx_sha256=None,
                quantization={"tool": "tests/engines/conftest.py", "method": precision})
    graph.with_suffix(".json").write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="session")
def reduced_dir(tmp_path_factory, onnx_dir, models):
    """FP32, FP16 and INT8 graphs (with sidecars) of asr_small, asr_stream_step and tts_vocoder in one folder."""
    from speechtrt.export import component

    out = tmp_path_factory.mktemp("onnx_reduced")
    for name in REDUCED_COMPONENTS:
        for suffix in (".onnx", ".json"):
            shutil.copy(onnx_dir / f"{name}{suffix}", out / f"{name}{suffix}")
        comp = component(name)
        sizes = {d: min(r.opt, 32) for d, r in comp.dims.items()}
        feeds = {k: v.numpy() for k, v in comp.make_inputs(models(comp.model), sizes,
                                                           torch.Generator().manual_seed(0)).items()}
        to_fp16(out / f"{name}.onnx", out / f"{name}.fp16.onnx")
        write_sidecar(out / f"{name}.json", "fp16", out / f"{name}.fp16.onnx")
        assert to_int8_qdq(out / f"{name}.onnx", out / f"{name}.int8.onnx", feeds) > 0
        write_sidecar(out / f"{name}.json", "int8", out / f"{name}.int8.onnx")
    return out


@pytest.fixture(scope="session")
def engines_root(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="session")
def fp32_engines(onnx_dir, engines_root):
    """All seven components compiled at FP32 for sm86 (TensorRT-RTX, ahead of time): name → EngineBuildResult."""
    from speechtrt.engines.arch import parse_gpu
    from speechtrt.engines.builder import BuildSettings, EngineBuilder
    from speechtrt.vocab import COMPONENT_NAMES

    builder = EngineBuilder(BuildSettings(parse_gpu(GPU), engines_dir=engines_root), flavour=rtx_flavour())
    return {name: builder.build(name, "fp32", onnx_dir) for name in COMPONENT_NAMES}


@pytest.fixture(scope="session")
def reduced_engines(reduced_dir, engines_root):
    """FP16 and INT8 engines of the three reduced components: (name, precision) → EngineBuildResult."""
    from speechtrt.engines.arch import parse_gpu
    from speechtrt.engines.builder import BuildSettings, EngineBuilder

    builder = EngineBuilder(BuildSettings(parse_gpu(GPU), engines_dir=engines_root), flavour=rtx_flavour())
    return {(name, p): builder.build(name, p, reduced_dir) for name in REDUCED_COMPONENTS for p in ("fp16", "int8")}


@pytest.fixture(scope="session")
def rtx():
    return rtx_flavour()


@pytest.fixture(scope="session")
def graph_tools():
    """The graph helpers above, for tests that make their own variants: ``to_fp16``, ``write_sidecar``."""
    from types import SimpleNamespace

    return SimpleNamespace(to_fp16=to_fp16, write_sidecar=write_sidecar)
