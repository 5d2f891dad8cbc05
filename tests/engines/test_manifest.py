"""Loading checks: a plan is refused, with the engine named and the fix given, unless it fits this machine."""

import json
import shutil

import pytest

from speechtrt.engines.arch import DeviceInfo, current_device
from speechtrt.engines.flavour import TrtFlavour
from speechtrt.engines.manifest import MANIFEST_NAME, check_engine, read_manifest, update_manifest
from speechtrt.errors import EngineLoadError

pytestmark = pytest.mark.slow

A10 = DeviceInfo("NVIDIA A10", 8, 6)
A100 = DeviceInfo("NVIDIA A100-SXM4-80GB", 8, 0)
H100 = DeviceInfo("NVIDIA H100 80GB HBM3", 9, 0)


@pytest.fixture
def plan(fp32_engines, tmp_path):
    """A private copy of the FP32 tts_vocoder plan and its manifest: engines/sm86/tts/tts_vocoder.fp32.plan."""
    built = fp32_engines["tts_vocoder"]
    folder = tmp_path / "engines" / "sm86" / "tts"
    folder.mkdir(parents=True)
    shutil.copy(built.plan, folder / built.plan.name)
    data = json.loads(built.manifest.read_text())
    data["engines"] = {"tts_vocoder.fp32": data["engines"]["tts_vocoder.fp32"]}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    return folder / built.plan.name


def _edit_entry(plan, **changes):
    path = plan.parent / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["engines"]["tts_vocoder.fp32"].update(changes)
    path.write_text(json.dumps(data))


def test_a_fresh_plan_passes(plan, rtx):
    entry = check_engine(plan, flavour=rtx, device=None)
    assert entry["plan"] == plan.name and entry["precision"] == "fp32"
    assert check_engine(plan, flavour=rtx, device=A10)["target"]["gpu"] == "sm86"  # the GPU it was built for
    if current_device() is None:  # defaults: the installed TensorRT-RTX, no GPU to compare
        assert check_engine(plan)["plan_bytes"] == plan.stat().st_size


def test_missing_plan_names_the_build_command(plan, rtx):
    plan.unlink()
    with pytest.raises(EngineLoadError) as err:
        check_engine(plan, flavour=rtx, device=None)
    msg = str(err.value)
    assert "engine tts_vocoder (fp32, sm86" in msg and "does not exist" in msg
    assert "speechtrt build --gpu sm86 --model tts --fp32 --engine-dir" in msg


def test_truncated_plan_is_refused(plan, rtx):
    data = plan.read_bytes()
    plan.write_bytes(data[: len(data) // 2])
    with pytest.raises(EngineLoadError, match=r"tts_vocoder .* is truncated: \d+ bytes on disk, \d+ when built; "
                                              r"rebuild it with `speechtrt build --gpu sm86 --model tts --fp32"):
        check_engine(plan, flavour=rtx, device=None)


def test_corrupt_plan_of_the_same_size_is_refused(plan, rtx):
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineLoadError, match="is corrupt: its SHA-256 differs"):
        check_engine(plan, flavour=rtx, device=None)
    assert check_engine(plan, flavour=rtx, device=None, verify_sha256=False)  # size alone cannot see it


def test_plan_from_another_tensorrt_version_is_refused(plan, rtx):
    _edit_entry(plan, tensorrt={"flavour": "tensorrt-rtx", "version": "1.0.0.21"})
    with pytest.raises(EngineLoadError) as err:
        check_engine(plan, flavour=rtx, device=None)
    msg = str(err.value)
    assert f"built with TensorRT-RTX 1.0.0.21 but TensorRT-RTX {rtx.version} is installed" in msg
    assert "rebuild it with `speechtrt build --gpu sm86 --model tts --fp32" in msg


def test_plan_from_another_flavour_is_refused(plan, rtx):
    with pytest.raises(EngineLoadError, match=r"built with TensorRT-RTX .* but TensorRT 10\.13\.3 is installed"):
        check_engine(plan, flavour=TrtFlavour("tensorrt", "10.13.3", rtx.trt), device=None)
    _edit_entry(plan, tensorrt={"flavour": "tensorrt", "version": "10.13.3.9"})
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineLoadError, match="TensorRT 10.13.3.9, which is not installed here"):
            check_engine(plan, device=None)


def test_plan_for_another_gpu_is_refused(plan, rtx):
    with pytest.raises(EngineLoadError) as err:
        check_engine(plan, flavour=rtx, device=A100)
    msg = str(err.value)
    assert "built for compute capability 8.6 but this GPU is NVIDIA A100-SXM4-80GB (sm80" in msg
    assert "speechtrt build --gpu sm80 --model tts --fp32" in msg


def test_rtx_plan_on_hopper_says_to_use_tensorrt(plan, rtx):
    with pytest.raises(EngineLoadError, match=r"TensorRT-RTX engines do not run: install TensorRT .* --gpu sm90"):
        check_engine(plan, flavour=rtx, device=H100)


def test_ampere_plus_plan_runs_on_any_ampere_or_newer_gpu(plan, rtx):
    target = dict(read_manifest(plan.parent)["engines"]["tts_vocoder.fp32"]["target"], hardware_compat="ampere-plus")
    _edit_entry(plan, target=target)
    assert check_engine(plan, flavour=rtx, device=A100)
    with pytest.raises(EngineLoadError, match="compute capability 8.6"):
        check_engine(plan, flavour=rtx, device=DeviceInfo("Tesla T4", 7, 5))


def test_missing_or_broken_manifest_is_refused(plan, rtx):
    (plan.parent / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EngineLoadError, match="has no usable manifest .* not readable JSON"):
        check_engine(plan, flavour=rtx, device=None)
    (plan.parent / MANIFEST_NAME).unlink()
    with pytest.raises(EngineLoadError, match="manifest.json does not exist"):
        check_engine(plan, flavour=rtx, device=None)


def test_plan_not_listed_in_the_manifest_is_refused(plan, rtx):
    other = plan.with_name("tts_vocoder.int8.plan")
    shutil.copy(plan, other)
    with pytest.raises(EngineLoadError, match=r"is not listed in .*manifest.json: rebuild it with .* --int8"):
        check_engine(other, flavour=rtx, device=None)


def test_update_manifest_replaces_one_entry_and_keeps_the_rest(tmp_path):
    update_manifest(tmp_path, "sm86", "tts", "a.fp32", {"plan": "a.fp32.plan", "n": 1})
    update_manifest(tmp_path, "sm86", "tts", "b.int8", {"plan": "b.int8.plan"})
    update_manifest(tmp_path, "sm86", "tts", "a.fp32", {"plan": "a.fp32.plan", "n": 2})
    data = read_manifest(tmp_path)
    assert list(data["engines"]) == ["a.fp32", "b.int8"] and data["engines"]["a.fp32"]["n"] == 2
    assert not list(tmp_path.glob(".*.tmp"))
