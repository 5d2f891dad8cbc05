"""--gpu names, compute capabilities, and which targets each TensorRT flavour can reach from here."""

import pytest

from speechtrt.engines.arch import (
    ARCHES, DeviceInfo, arch_for_capability, parse_gpu, resolve_target, rtx_targets, tensorrt_targets,
)
from speechtrt.engines.flavour import find_flavour
from speechtrt.errors import BuildError, InputError


@pytest.mark.parametrize("text, sm, capability", [
    ("sm86", "sm86", "8.6"), ("SM_80", "sm80", "8.0"), ("89", "sm89", "8.9"), ("9.0", "sm90", "9.0"),
    ("sm100", "sm100", "10.0"), ("12.0", "sm120", "12.0"), (" sm75 ", "sm75", "7.5"),
])
def test_parse_gpu_spellings(text, sm, capability):
    arch = parse_gpu(text)
    assert (arch.sm, arch.capability) == (sm, capability)


@pytest.mark.parametrize("text", ["sm42", "ampere", "", "8.7"])
def test_unknown_gpu_names_the_choices(text):
    with pytest.raises(InputError, match="choose one of sm75, sm80, sm86, sm89, sm90, sm100, sm120"):
        parse_gpu(text)


def test_capability_lookup_round_trips():
    for arch in ARCHES.values():
        assert arch_for_capability(arch.major, arch.minor) is arch
    assert arch_for_capability(7, 0) is None
    assert DeviceInfo("Tesla V100", 7, 0).sm == "sm70"


def test_rtx_reaches_consumer_and_ampere_archs_but_not_hopper():
    trt = find_flavour("tensorrt-rtx").trt
    assert [a.sm for a in rtx_targets(trt)] == ["sm75", "sm80", "sm86", "sm89", "sm120"]
    target = resolve_target(parse_gpu("sm86"), "tensorrt-rtx", trt, device=None)
    assert target.rtx_capability == trt.ComputeCapability.SM86 and target.ahead_of_time


@pytest.mark.parametrize("gpu", ["sm90", "sm100"])
def test_rtx_refuses_hopper_and_datacenter_blackwell_and_says_how(gpu):
    trt = find_flavour("tensorrt-rtx").trt
    with pytest.raises(BuildError) as err:
        resolve_target(parse_gpu(gpu), "tensorrt-rtx", trt, device=None)
    msg = str(err.value)
    assert f"TensorRT-RTX cannot compile for {gpu}" in msg
    assert "pip install --extra-index-url https://pypi.nvidia.com tensorrt" in msg
    assert f"speechtrt build --gpu {gpu}" in msg and "--hardware-compat ampere-plus" in msg


def test_rtx_has_no_hardware_compat_level():
    trt = find_flavour("tensorrt-rtx").trt
    with pytest.raises(BuildError, match="TensorRT option"):
        resolve_target(parse_gpu("sm86"), "tensorrt-rtx", trt, None, hardware_compat="ampere-plus")
    with pytest.raises(InputError, match="none, ampere-plus, same-cc"):
        resolve_target(parse_gpu("sm86"), "tensorrt-rtx", trt, None, hardware_compat="turing-plus")


H100 = DeviceInfo("NVIDIA H100 80GB HBM3", 9, 0)
T4 = DeviceInfo("Tesla T4", 7, 5)


def test_tensorrt_targets_the_gpu_it_runs_on():
    target = resolve_target(parse_gpu("sm90"), "tensorrt", None, H100)
    assert (target.arch.sm, target.ahead_of_time, target.hardware_compat) == ("sm90", False, "none")
    assert [a.sm for a in tensorrt_targets(H100, "none")] == ["sm90"]
    assert [a.sm for a in tensorrt_targets(None, "none")] == []


def test_tensorrt_other_arch_needs_that_gpu_or_ampere_plus():
    with pytest.raises(BuildError) as err:
        resolve_target(parse_gpu("sm86"), "tensorrt", None, H100)
    assert "NVIDIA H100" in str(err.value) and "on an sm86 GPU" in str(err.value)
    assert "--hardware-compat ampere-plus" in str(err.value)
    target = resolve_target(parse_gpu("sm86"), "tensorrt", None, H100, hardware_compat="ampere-plus")
    assert target.hardware_compat == "ampere-plus" and target.ahead_of_time
    assert "sm75" not in [a.sm for a in tensorrt_targets(H100, "ampere-plus")]


def test_tensorrt_without_gpu_or_on_turing_explains():
    with pytest.raises(BuildError, match="this machine has none.*TensorRT-RTX"):
        resolve_target(parse_gpu("sm86"), "tensorrt", None, None)
    with pytest.raises(BuildError, match="Ampere and newer GPUs only"):
        resolve_target(parse_gpu("sm86"), "tensorrt", None, T4, hardware_compat="ampere-plus")
