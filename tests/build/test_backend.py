"""Finding the installed TensorRT flavour."""

import importlib.util

import pytest

from speechtrt.build.backend import FLAVOURS, find_backend, import_backend, installed_backends
from speechtrt.errors import BuildError


def test_preferred_flavour_is_tensorrt_then_rtx():
    backend = find_backend()
    installed = [b.flavour for b in installed_backends()]
    assert backend.flavour == installed[0]
    assert installed == [f for f in FLAVOURS if f in installed]  # tensorrt first when both are present
    assert backend.version[0].isdigit()


def test_rtx_is_installed_for_ci_and_reports_its_version():
    rtx = find_backend("tensorrt-rtx")
    assert rtx.label.startswith("TensorRT-RTX ") and rtx.major >= 1
    assert rtx.to_json() == {"flavour": "tensorrt-rtx", "version": rtx.version}
    assert hasattr(rtx.trt, "ComputeCapability")


def test_unknown_or_missing_flavour_is_a_build_error():
    with pytest.raises(BuildError, match="unknown TensorRT flavour 'onnxruntime'"):
        find_backend("onnxruntime")
    if importlib.util.find_spec("tensorrt") is None:
        assert import_backend("tensorrt") is None
        with pytest.raises(BuildError, match="pypi.nvidia.com"):
            find_backend("tensorrt")


def test_environment_variable_picks_the_flavour(monkeypatch):
    monkeypatch.setenv("SPEECHTRT_TRT", "tensorrt-rtx")
    assert find_backend().flavour == "tensorrt-rtx"


def test_candidates_are_every_installed_flavour_unless_one_is_named(monkeypatch):
    from speechtrt.build.backend import candidate_backends

    monkeypatch.delenv("SPEECHTRT_TRT", raising=False)
    assert [b.flavour for b in candidate_backends()] == [b.flavour for b in installed_backends()]
    monkeypatch.setenv("SPEECHTRT_TRT", "tensorrt-rtx")
    assert [b.flavour for b in candidate_backends()] == ["tensorrt-rtx"]
