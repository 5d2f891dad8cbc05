"""What every report records about the machine: the integer vector features INT8 speed and exactness depend on."""

from pathlib import Path

from speechtrt.reporting.env import INT8_ISA, device_info, environment


def test_device_records_the_cpu_integer_features_from_the_kernel():
    info = device_info("cpu", threads=1)
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags = line
            break
    assert info["cpu_isa"] == [f for f in INT8_ISA if f in flags.split(":", 1)[-1].split()]
    vnni = any("vnni" in f or f.startswith("amx") for f in info["cpu_isa"])
    assert ("no VNNI" not in info["summary"]) == vnni
    assert info["torch_threads"] == 1 and info["cpu_cores"] >= 1


def test_environment_has_device_versions_and_commit():
    env = environment()
    assert set(env) == {"device", "versions", "commit"}
    assert env["versions"]["torch"] and env["device"]["type"] == "cpu"
