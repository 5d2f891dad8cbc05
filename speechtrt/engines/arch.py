"""GPU architectures: the ``--gpu smXX`` names, their compute capabilities, and what each TensorRT flavour can target.

An engine is compiled for one compute capability. Two TensorRT flavours build them, with different reach:

* **TensorRT** (``tensorrt``) compiles for the GPU it runs on. It reaches another architecture only through a
  hardware-compatibility level: ``ampere-plus`` (built on an Ampere or newer GPU, runs on any Ampere or newer GPU)
  or ``same-cc`` (runs on any GPU of the builder's compute capability). Without a GPU it cannot build at all.
* **TensorRT-RTX** (``tensorrt_rtx_bindings``) compiles ahead of time for a compute capability it names in its
  ``ComputeCapability`` enum, with or without a GPU present. It has no member for Hopper (sm90) or datacenter
  Blackwell (sm100), and its engines do not run there.
"""

from __future__ import annotations

from dataclasses import dataclass

from speechtrt.errors import BuildError, InputError

HARDWARE_COMPAT_LEVELS = ("none", "ampere-plus", "same-cc")


@dataclass(frozen=True)
class GpuArch:
    """One GPU architecture as ``--gpu`` names it (``sm86``) with its compute capability (8, 6)."""

    sm: str
    major: int
    minor: int
    family: str
    examples: str

    @property
    def capability(self) -> str:
        """Compute capability as NVIDIA writes it: ``"8.6"``."""
        return f"{self.major}.{self.minor}"

    def describe(self) -> str:
        return f"{self.sm} (compute capability {self.capability}, {self.family}: {self.examples})"


ARCHES: dict[str, GpuArch] = {
    a.sm: a
    for a in (
        GpuArch("sm75", 7, 5, "Turing", "T4, RTX 2080 Ti"),
        GpuArch("sm80", 8, 0, "Ampere", "A100, A30"),
        GpuArch("sm86", 8, 6, "Ampere", "A10, A40, RTX 3090"),
        GpuArch("sm89", 8, 9, "Ada Lovelace", "L4, L40S, RTX 4090"),
        GpuArch("sm90", 9, 0, "Hopper", "H100, H200"),
        GpuArch("sm100", 10, 0, "Blackwell", "B200, GB200"),
        GpuArch("sm120", 12, 0, "Blackwell", "RTX 5090, RTX PRO 6000"),
    )
}
GPU_NAMES = tuple(ARCHES)


def parse_gpu(text: str) -> GpuArch:
    """The architecture named by ``--gpu``: ``sm86``, ``sm_86``, ``86`` or ``8.6``; anything else is an InputError."""
    key = text.strip().lower().replace("_", "")
    if "." in key:
        major, _, minor = key.partition(".")
        key = f"sm{major}{minor}"
    elif key.isdigit():
        key = f"sm{key}"
    if key not in ARCHES:
        raise InputError(f"unknown GPU architecture {text!r}: choose one of {', '.join(GPU_NAMES)}")
    return ARCHES[key]


def arch_for_capability(major: int, minor: int) -> GpuArch | None:
    """The known architecture with compute capability ``major.minor``, or None for one not listed here."""
    for arch in ARCHES.values():
        if (arch.major, arch.minor) == (major, minor):
            return arch
    return None


def capability_name(major: int, minor: int) -> str:
    """``sm86``-style name for any compute capability, listed here or not."""
    arch = arch_for_capability(major, minor)
    return arch.sm if arch else f"sm{major}{minor}"


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU present on this machine: its name and compute capability."""

    name: str
    major: int
    minor: int

    @property
    def capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def sm(self) -> str:
        return capability_name(self.major, self.minor)

    def to_json(self) -> dict:
        return {"name": self.name, "compute_capability": self.capability, "gpu": self.sm}


def current_device() -> DeviceInfo | None:
    """The first CUDA GPU, found through torch (when it was built with CUDA) or NVML; None without one.

    Neither way creates work on the GPU; a machine without a driver simply reports no device.
    """
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return DeviceInfo(torch.cuda.get_device_name(0), int(major), int(minor))
    except Exception:  # a broken CUDA install counts as no GPU; the NVML path below may still see one
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return None
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            return DeviceInfo(name.decode() if isinstance(name, bytes) else str(name), int(major), int(minor))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


@dataclass(frozen=True)
class BuildTarget:
    """What one build compiles for: the architecture, and how the TensorRT flavour is told.

    ``rtx_capability`` is the TensorRT-RTX ``ComputeCapability`` member (TensorRT-RTX only);
    ``hardware_compat`` is the TensorRT hardware-compatibility level (TensorRT only, ``none`` by default).
    ``ahead_of_time`` is True when no GPU of the target architecture takes part in the build.
    """

    arch: GpuArch
    flavour: str
    hardware_compat: str = "none"
    rtx_capability: object = None
    ahead_of_time: bool = False


def rtx_targets(trt) -> list[GpuArch]:
    """Architectures the installed TensorRT-RTX can compile for (its ``ComputeCapability`` members)."""
    members = set(trt.ComputeCapability.__members__)
    return [a for a in ARCHES.values() if a.sm.upper() in members]


def tensorrt_targets(device: DeviceInfo | None, hardware_compat: str) -> list[GpuArch]:
    """Architectures TensorRT can compile for on this machine: the GPU's own, or all Ampere+ with ``ampere-plus``."""
    if device is None:
        return []
    own = arch_for_capability(device.major, device.minor)
    if hardware_compat == "ampere-plus" and device.major >= 8:
        return [a for a in ARCHES.values() if a.major >= 8]
    return [own] if own else []


def resolve_target(arch: GpuArch, flavour: str, trt, device: DeviceInfo | None,
                   hardware_compat: str = "none") -> BuildTarget:
    """Check that ``flavour`` (``tensorrt`` or ``tensorrt-rtx``) can compile for ``arch`` here, or raise BuildError.

    The error says how to get that engine: build on that GPU, use TensorRT-RTX where it reaches the architecture,
    or ask for a hardware-compatibility level.
    """
    if hardware_compat not in HARDWARE_COMPAT_LEVELS:
        raise InputError(
            f"unknown hardware-compatibility level {hardware_compat!r}: "
            f"choose one of {', '.join(HARDWARE_COMPAT_LEVELS)}"
        )
    if flavour == "tensorrt-rtx":
        return _resolve_rtx(arch, trt, hardware_compat)
    return _resolve_tensorrt(arch, device, hardware_compat)


def _resolve_rtx(arch: GpuArch, trt, hardware_compat: str) -> BuildTarget:
    reachable = rtx_targets(trt)
    if hardware_compat != "none":
        raise BuildError(
            f"--hardware-compat {hardware_compat} is a TensorRT option; TensorRT-RTX compiles for the named "
            f"compute capability instead: drop the flag and pass --gpu {arch.sm}, or install TensorRT on an "
            f"Ampere or newer GPU to build a hardware-compatible engine"
        )
    if arch not in reachable:
        raise BuildError(
            f"TensorRT-RTX cannot compile for {arch.describe()}: it reaches only "
            f"{', '.join(a.sm for a in reachable)}, and its engines do not run on {arch.family} GPUs. "
            f"Build this engine with TensorRT on an {arch.sm} GPU (pip install --extra-index-url "
            f"https://pypi.nvidia.com tensorrt, then run `speechtrt build --gpu {arch.sm}` there), or on another "
            f"Ampere or newer GPU with `--hardware-compat ampere-plus`"
        )
    return BuildTarget(arch, "tensorrt-rtx", "none", getattr(trt.ComputeCapability, arch.sm.upper()), True)


def _resolve_tensorrt(arch: GpuArch, device: DeviceInfo | None, hardware_compat: str) -> BuildTarget:
    if device is None:
        raise BuildError(
            f"TensorRT builds engines on the GPU they are for, and this machine has none: run "
            f"`speechtrt build --gpu {arch.sm}` on an {arch.sm} GPU, or install TensorRT-RTX "
            f"(pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings) to compile ahead of time without one"
        )
    if (device.major, device.minor) == (arch.major, arch.minor):
        return BuildTarget(arch, "tensorrt", hardware_compat, None, False)
    if hardware_compat == "ampere-plus" and device.major >= 8 and arch.major >= 8:
        return BuildTarget(arch, "tensorrt", hardware_compat, None, True)
    hint = (
        f"or add `--hardware-compat ampere-plus` to build here an engine that runs on every Ampere or newer GPU"
        if device.major >= 8 and arch.major >= 8
        else "(hardware compatibility covers Ampere and newer GPUs only)"
    )
    raise BuildError(
        f"this GPU is {device.name} ({device.sm}, compute capability {device.capability}) and TensorRT compiles for "
        f"the GPU it runs on: run `speechtrt build --gpu {arch.sm}` on an {arch.sm} GPU ({arch.examples}), {hint}"
    )
