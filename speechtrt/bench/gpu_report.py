"""Every GPU number from one prepared command: ``speechtrt gpu-report`` (``make gpu-report``).

A GPU machine is lent rarely and briefly, so the GPU measurements are one script with a hard total budget (8
minutes by default): the TTS benchmark (torch CUDA FP16 with the static KV pool and CUDA graphs; TensorRT where it
is installed), the TTS profile, the ASR evaluation's RTFx of asr-medium, and the streaming capacity search. Each
step is the ordinary ``speechtrt`` command in a child process with its share of the budget as a hard timeout, so a
step that hangs or runs long costs only its share; its log and reports are kept either way. Everything ends in one
archive (``gpu_report.tar.gz``) plus ``gpu_report.md`` / ``.json`` — a device machine hands back few files.

Inputs that need espeak-ng (the accented test utterances) are prepared beforehand on any machine that has it
(``speechtrt gpu-report --prepare``, ``make gpu-prep``) into ``gpu_inputs/``; the GPU machine needs none.

``--device cpu --quick`` runs the same steps at smoke-test size on the CPU: the test suite runs it so the script
cannot rot between the rare GPU sessions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechtrt.errors import InputError
from speechtrt.reporting import environment, markdown_table, write_json


@dataclass(frozen=True)
class GpuReportConfig:
    device: str = "cuda"
    out_dir: Path = Path("reports/gpu")
    inputs: Path = Path("gpu_inputs")
    budget_s: float = 480.0
    quick: bool = False


@dataclass
class Step:
    name: str
    share: float  # of the total budget
    args: list[str]
    needs: list[Path] = field(default_factory=list)


def _tensorrt_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None


def plan_steps(cfg: GpuReportConfig) -> list[Step]:
    """The four measurements, sized for ``cfg`` (quick: smoke-test sizes, same code paths)."""
    gpu = cfg.device.startswith("cuda")
    out = cfg.out_dir
    quick = ["--quick"] if cfg.quick else []
    backends = "torch,trt" if gpu and _tensorrt_installed() else ("torch" if gpu else "torch,ort")
    bench = ["bench", "--device", cfg.device, "--backend", backends, "--out", str(out / "bench"), *quick]
    if gpu:
        bench += ["--precision", "fp16,fp32", "--repeats", "5", "--categories", "headline,short,medium",
                  "--baseline-categories", "headline", "--baseline-repeats", "2"]
    else:
        bench += ["--precision", "fp32", "--threads", "1"]
    profile = ["profile", "--device", cfg.device, "--out", str(out / "profile"), *quick]
    manifest = cfg.inputs / "asr" / "test.jsonl"
    evaluate = ["eval", "--manifest", str(manifest), "--checkpoints", "checkpoints/asr-medium.pt",
                "--backends", "torch", "--precisions", "fp32,fp16" if gpu else "fp32", "--decoder", "greedy",
                "--n-boot", "100", "--out", str(out / "eval")]
    stream = ["stream", "--device", cfg.device, "--manifest", str(manifest), "--out", str(out / "stream")]
    if gpu:
        stream += ["--fp16", "--cuda-graphs", "--find-capacity", "--streams", "256", "--seconds", "6"]
    else:
        stream += ["--streams", "4", "--seconds", "2"]
    return [Step("tts_bench", 0.45, bench), Step("tts_profile", 0.12, profile),
            Step("asr_eval", 0.18, evaluate, [manifest]), Step("stream_capacity", 0.25, stream, [manifest])]


def prepare_inputs(inputs: Path, log=print) -> Path:
    """The accented test utterances the GPU steps read (espeak-ng, 6 accents × 2 unseen speakers × 4 sentences)."""
    from speechtrt.asr.data import SynthConfig, synthesize
    from speechtrt.files import check_writable

    check_writable(inputs, "--inputs")
    manifest = synthesize(inputs / "asr", SynthConfig(split="test", speakers_per_accent=2, sentences_per_speaker=4))
    log(f"wrote {manifest}; carry {inputs}/ to the GPU machine with the checkout")
    return manifest


def run(cfg: GpuReportConfig, log=print) -> dict:
    """Run every step within the budget; write the summary and the archive. Returns the summary."""
    import torch

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("gpu-report measures a CUDA GPU and torch sees none here; on a CPU run "
                         "`speechtrt gpu-report --device cpu --quick` (the smoke test of the same script)")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + cfg.budget_s
    steps = []
    plan = plan_steps(cfg)
    for i, step in enumerate(plan):
        missing = [str(p) for p in step.needs if not p.exists()]
        left = deadline - time.monotonic()
        share = step.share / sum(s.share for s in plan[i:])  # time earlier steps left unused goes to the rest
        if missing:
            steps.append({"step": step.name, "status": "not run", "reason": f"missing {', '.join(missing)}: run "
                          "`speechtrt gpu-report --prepare` on a machine with espeak-ng first"})
            continue
        if left < 10:
            steps.append({"step": step.name, "status": "not run", "reason": "the total budget was spent"})
            continue
        steps.append(_run_step(step, left * share, cfg, log))
    summary = {"report": "gpu", **environment(cfg.device), "budget_s": cfg.budget_s, "quick": cfg.quick,
               "steps": steps, "headline": _headline(cfg.out_dir)}
    write_json(cfg.out_dir / "gpu_report.json", summary)
    (cfg.out_dir / "gpu_report.md").write_text(_markdown(summary))
    _archive(cfg.out_dir)
    return summary


def _run_step(step: Step, timeout: float, cfg: GpuReportConfig, log) -> dict:
    log(f"{step.name}: speechtrt {' '.join(step.args)} (at most {timeout:.0f} s)")
    log_path = cfg.out_dir / f"{step.name}.log"
    t0 = time.monotonic()
    with open(log_path, "w") as f:
        try:
            proc = subprocess.run([sys.executable, "-m", "speechtrt.cli", *step.args], stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout)
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"stopped at its {timeout:.0f} s share of the budget"
    seconds = time.monotonic() - t0
    log(f"{step.name}: {status} in {seconds:.0f} s")
    return {"step": step.name, "status": status, "seconds": round(seconds, 1), "log": log_path.name,
            "command": "speechtrt " + " ".join(step.args)}


def _headline(out: Path) -> dict:
    """The few numbers a reader looks for first, read back from the steps' own reports."""
    found = {}
    bench = out / "bench" / "tts_bench.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        ok = {n: v for n, v in b.get("variants", {}).items() if "skipped" not in v}
        if ok:
            best = min(ok, key=lambda n: ok[n]["latency_ms"]["p50"])
            found["tts_headline_p50_ms"] = {"variant": best, "value": ok[best]["latency_ms"]["p50"]}
            top = max(ok, key=lambda n: ok[n]["throughput"]["frames_per_s"])
            found["tts_frames_per_s"] = {"variant": top, "value": ok[top]["throughput"]["frames_per_s"]}
    ev = out / "eval" / "asr_eval.json"
    if ev.is_file():
        models = json.loads(ev.read_text()).get("models", {})
        if models:
            best = max(models, key=lambda n: models[n].get("rtfx") or 0)
            found["asr_rtfx"] = {"variant": best, "value": models[best].get("rtfx")}
    st = out / "stream" / "stream.json"
    if st.is_file():
        s = json.loads(st.read_text())
        found["stream_p95_ms"] = {"streams": s.get("streams"), "value": s.get("latency_ms", {}).get("p95")}
        if s.get("capacity"):
            found["stream_capacity"] = {"value": s["capacity"].get("capacity")}
    return found


def _markdown(summary: dict) -> str:
    dev = summary["device"]
    lines = [f"# GPU report — {dev.get('summary', dev.get('name'))}", "",
             f"Commit {(summary['commit'].get('sha') or 'unknown')[:12]}; budget {summary['budget_s']:.0f} s"
             f"{'; quick (smoke-test sizes)' if summary['quick'] else ''}.", "",
             markdown_table(["step", "status", "seconds", "command"],
                            [[s["step"], s["status"] + (f": {s['reason']}" if "reason" in s else ""),
                              s.get("seconds"), s.get("command", "")] for s in summary["steps"]]), ""]
    if summary["headline"]:
        lines += ["## Headline numbers", ""]
        lines += [f"- {k}: {v}" for k, v in summary["headline"].items()] + [""]
    lines += ["Each step's full report is in its folder (bench/, profile/, eval/, stream/); logs beside them.", ""]
    return "\n".join(lines)


def _archive(out: Path) -> Path:
    path = out / "gpu_report.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for p in sorted(out.rglob("*")):
            if p.is_file() and p != path:
                tar.add(p, arcname=str(p.relative_to(out)))
    return path
