"""Engine building (layer 4): strongly typed TensorRT plans per GPU architecture, their manifest and loading checks.

    builder = EngineBuilder(BuildSettings(parse_gpu("sm86")))       # TensorRT if installed, else TensorRT-RTX
    result = builder.build("asr_small", "int8", "out/onnx")         # engines/sm86/asr-small/asr_small.int8.plan
    check_engine(result.plan)                                       # before loading: file, TensorRT, GPU
"""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.engines.arch import (
        ARCHES, GPU_NAMES, HARDWARE_COMPAT_LEVELS, BuildTarget, DeviceInfo, GpuArch, current_device, parse_gpu,
        resolve_target,
    )
    from speechtrt.engines.flavour import TrtFlavour, find_flavour, installed_flavours
    from speechtrt.engines.builder import (
        BuildSettings, EngineBuilder, EngineBuildResult, PrecisionSummary, onnx_path_for,
        parse_shape_override,
    )
    from speechtrt.engines.manifest import MANIFEST_NAME, check_engine, plan_path, read_manifest

__getattr__, __dir__ = lazy_exports(__name__, {
    "arch": (
        "ARCHES", "GPU_NAMES", "HARDWARE_COMPAT_LEVELS", "BuildTarget", "DeviceInfo", "GpuArch", "current_device",
        "parse_gpu", "resolve_target"
    ),
    "flavour": ("TrtFlavour", "find_flavour", "installed_flavours"),
    "builder": (
        "BuildSettings", "EngineBuilder", "EngineBuildResult", "PrecisionSummary", "onnx_path_for",
        "parse_shape_override"
    ),
    "manifest": ("MANIFEST_NAME", "check_engine", "plan_path", "read_manifest"),
})

__all__ = [
    "ARCHES", "TrtFlavour", "BuildSettings", "BuildTarget", "DeviceInfo", "EngineBuildResult", "EngineBuilder",
    "GPU_NAMES", "GpuArch", "HARDWARE_COMPAT_LEVELS", "MANIFEST_NAME", "PrecisionSummary",
    "check_engine", "current_device", "find_flavour", "installed_flavours", "onnx_path_for", "parse_gpu",
    "parse_shape_override", "plan_path", "read_manifest", "resolve_target",
]
