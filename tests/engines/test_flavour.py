"""Finding the installed TensorRT flavour."""

import importlib.util

import pytest

from speechtrt.engines.flavour import FLAVOURS, find_flavour, import_flavour, installed_flavours
from speechtrt.errors import BuildError


def test_preferred_flavour_is_tensorrt_then_rtx():
    found = find_flavour()
    installed = [b.flavour for b in installed_flavours()]
    assert found.flavour == installed[0]
    assert installed == [f for f in FLAVOURS if f in installed]  # tensorrt first when both are present
    assert found.version[0].isdigit()


def test_rtx_is_installed_for_ci_and_reports_its_version():
    rtx = find_flavour("tensorrt-rtx")
    assert rtx.label.startswith("TensorRT-RTX ") and rtx.major >= 1
    assert rtx.to_json() == {"flavour": "tensorrt-rtx", "version": rtx.version}
    assert hasattr(rtx.trt, "ComputeCapability")


def test_unknown_or_missing_flavour_is_a_build_error():
    with pytest.raises(BuildError, match="unknown TensorRT flavour 'onnxruntime'"):
        find_flavour("onnxruntime")
    if importlib.util.find_spec("tensorrt") is None:
        assert import_flavour("tensorrt") is None
        with pytest.raises(BuildError, match="pypi.nvidia.com"):
            find_flavour("tensorrt")


def test_environment_variable_picks_the_flavour(monkeypatch):
    monkeypatch.setenv("SPEECHTRT_TRT", "tensorrt-rtx")
    assert find_flavour().flavour == "tensorrt-rtx"


def test_candidates_are_every_installed_flavour_unless_one_is_named(monkeypatch):
    from speechtrt.engines.flavour import candidate_flavours

    monkeypatch.delenv("SPEECHTRT_TRT", raising=False)
    assert [b.flavour for b in candidate_flavours()] == [b.flavour for b in installed_flavours()]
    monkeypatch.setenv("SPEECHTRT_TRT", "tensorrt-rtx")
    assert [b.flavour for b in candidate_flavours()] == ["tensorrt-rtx"]
