"""Start the ``tritonserver`` that ships inside the ``nvidia-pytriton`` wheel on a model repository, and stop it.

The server side runs from its own virtualenv (``make triton-setup`` → ``.venv-triton``: nvidia-pytriton pins
``numpy<2``; the main environment has numpy 2). :func:`find_triton_env` locates it and :func:`server_environment`
prepares what the bundled binary needs to run Python-backend models from it, every time, in code:

* the Python backend's stub for that interpreter's version (``python_backend_stubs/3.X/triton_python_backend_stub``)
  placed beside ``libtriton_python.so`` in the wheel's backend directory, where the backend looks for it;
* the venv's ``bin`` first on ``PATH`` (the stub's embedded interpreter finds its ``sys.prefix``, hence the venv's
  site-packages and speechtrt, through it);
* ``LD_LIBRARY_PATH`` starting with the venv interpreter's ``LIBDIR``: the stub links ``libpython3.X.so.1.0``, and on a
  Python built outside the system (pyenv) the loader would otherwise pick the system's copy, and model loading fails
  with ``'_thread.RLock' object has no attribute '_recursion_count'``.

:class:`TritonServer` binds HTTP, gRPC and metrics to ``host`` (loopback by default), waits for
``/v2/health/ready`` with a timeout, and on failure raises :class:`TritonStartError` with the server's own last log
lines. :meth:`TritonServer.stop` asks for a graceful shutdown (SIGTERM: in-flight requests finish) and kills the
server's process group only past the timeout. :func:`serve` is the blocking entry point of ``speechtrt triton serve``
(and of ``speechtrt serve --engine triton``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from speechtrt.errors import InputError, SpeechTRTError

VENV_ENV = "SPEECHTRT_TRITON_VENV"
DEFAULT_VENV = ".venv-triton"


class TritonStartError(SpeechTRTError):
    """The server did not become ready; the message carries its last log lines."""


@dataclass(frozen=True)
class TritonEnv:
    """Where the bundled server and the interpreter its Python backend runs live."""

    venv: Path
    python: Path
    python_version: str  # "3.11"
    libdir: Path | None  # the interpreter's LIBDIR when it holds libpython3.X.so.1.0
    pytriton: Path  # .../site-packages/pytriton
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def tritonserver(self) -> Path:
        return self.pytriton / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.pytriton / "tritonserver" / "backends"

    @property
    def stub(self) -> Path:
        return self.pytriton / "tritonserver" / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"


def _venv_candidates(explicit: str | Path | None) -> list[Path]:
    if explicit:
        return [Path(explicit)]
    if os.environ.get(VENV_ENV):
        return [Path(os.environ[VENV_ENV])]
    here = Path(__file__).resolve().parents[2]  # the checkout (editable install)
    return [Path.cwd() / DEFAULT_VENV, here / DEFAULT_VENV, Path(sys.prefix)]


def find_triton_env(venv: str | Path | None = None) -> TritonEnv:
    """The virtualenv with ``nvidia-pytriton``: ``venv``, else ``$SPEECHTRT_TRITON_VENV``, else ``./.venv-triton``,
    the checkout's ``.venv-triton``, or the running interpreter's own environment. InputError naming the fix when none
    has it."""
    tried = []
    for candidate in _venv_candidates(venv):
        python = candidate / "bin" / "python"
        tried.append(str(candidate))
        if not python.exists():
            continue
        probe = ("import json, sys, sysconfig, importlib.util as u; s = u.find_spec('pytriton'); "
                 "print(json.dumps({'version': f'{sys.version_info[0]}.{sys.version_info[1]}', "
                 "'libdir': sysconfig.get_config_var('LIBDIR'), "
                 "'pytriton': list(s.submodule_search_locations)[0] if s else None}))")
        try:
            out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True)
            info = json.loads(out.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, OSError, ValueError, IndexError):
            continue
        if not info["pytriton"]:
            continue
        pytriton = Path(info["pytriton"])
        libdir = Path(info["libdir"]) if info["libdir"] else None
        if libdir is not None and not (libdir / f"libpython{info['version']}.so.1.0").exists():
            libdir = None
        return TritonEnv(candidate, python, info["version"], libdir, pytriton, pytriton.parent / "nvidia_pytriton.libs")
    raise InputError(f"no Triton server environment found (looked in {', '.join(tried)}): create it with "
                     f"`make triton-setup`, or pass --venv / set {VENV_ENV} to a virtualenv with nvidia-pytriton")


def place_backend_stub(env: TritonEnv) -> Path:
    """Put the Python backend stub for ``env``'s Python beside ``libtriton_python.so`` (once; replaced when it is
    another version's)."""
    if not env.stub.is_file():
        raise InputError(f"nvidia-pytriton in {env.venv} has no Python backend stub for Python {env.python_version} "
                         f"({env.stub}); use Python 3.8-3.12 for the Triton environment")
    target = env.backends / "python" / "triton_python_backend_stub"
    if not target.is_file() or target.read_bytes() != env.stub.read_bytes():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copy2(env.stub, tmp)
        os.replace(tmp, target)
    return target


def server_environment(env: TritonEnv, base: dict | None = None) -> dict:
    """Environment variables for ``tritonserver``: the venv first on PATH, its interpreter's LIBDIR (the libpython
    fix) and the wheel's own libraries on LD_LIBRARY_PATH."""
    out = dict(os.environ if base is None else base)
    out["PATH"] = os.pathsep.join([str(env.venv / "bin"), out.get("PATH", "")])
    libs = [str(p) for p in (env.libdir, env.libs) if p is not None]
    if out.get("LD_LIBRARY_PATH"):
        libs.append(out["LD_LIBRARY_PATH"])
    out["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    out.pop("PYTHONHOME", None)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerConfig:
    """How to run the server. Port 0 picks a free port."""

    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    venv: Path | None = None
    startup_timeout_s: float = 180.0
    shutdown_timeout_s: float = 30.0
    log_file: Path | None = None  # default: <repository>/../tritonserver.log beside the repository
    log_verbose: int = 0
    gpu_metrics: bool = False
    extra_args: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "repository", Path(self.repository))


@dataclass
class TritonServer:
    """A running ``tritonserver``. Use :func:`launch` or ``with TritonServer(config) as server:``."""

    config: ServerConfig
    env: TritonEnv | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    log_path: Path | None = field(default=None, init=False)

    @property
    def http_url(self) -> str:
        return f"{self.config.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['metrics']}/metrics"

    def command(self) -> list[str]:
        c = self.config
        return [
            str(self.env.tritonserver), f"--model-repository={c.repository.resolve()}",
            f"--backend-directory={self.env.backends}",
            f"--http-address={c.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={c.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={c.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-metrics=true", f"--allow-gpu-metrics={'true' if c.gpu_metrics else 'false'}",
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={int(c.shutdown_timeout_s)}",
            f"--log-verbose={c.log_verbose}", *c.extra_args,
        ]

    def start(self) -> "TritonServer":
        c = self.config
        if not any(c.repository.glob("*/config.pbtxt")):
            raise InputError(f"{c.repository} is not a model repository (no */config.pbtxt): write one with "
                             f"`speechtrt triton export --out {c.repository}`")
        self.env = self.env or find_triton_env(c.venv)
        place_backend_stub(self.env)
        self.ports = {k: (p or free_port(c.host)) for k, p in
                      (("http", c.http_port), ("grpc", c.grpc_port), ("metrics", c.metrics_port))}
        self.log_path = Path(c.log_file) if c.log_file else c.repository.resolve().parent / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=server_environment(self.env),
                                            start_new_session=True)
        try:
            self.wait_ready(c.startup_timeout_s)
        except BaseException:
            self.stop(timeout_s=10)
            raise
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Poll readiness until ``timeout_s``; TritonStartError with the log tail if it exits or never gets ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TritonStartError(f"tritonserver exited with code {code} while starting on {self.config.repository}"
                                       f"; its last log lines ({self.log_path}):\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.25)
        raise TritonStartError(f"tritonserver was not ready after {timeout_s:g} s on {self.config.repository}; "
                               f"its last log lines ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM and wait (Triton finishes in-flight requests, unloads models, ends its stubs); past the timeout,
        kill the server's process group (the server and its backend stubs). Returns the exit code."""
        if self.process is None:
            return None
        # Triton waits up to --exit-timeout-secs for open connections and in-flight requests, then unloads models
        timeout_s = self.config.shutdown_timeout_s + 30 if timeout_s is None else timeout_s
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(10)
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "TritonServer":
        return self.start() if not self.running else self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(config: ServerConfig) -> TritonServer:
    """Start a server on ``config.repository`` and return it once ready (call ``stop()`` when done)."""
    return TritonServer(config).start()


def serve(config: ServerConfig, on_ready: Callable[[TritonServer], None] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM (or until it exits on its own); returns its exit code."""
    server = launch(config)
    if on_ready is not None:
        on_ready(server)
    stop = {"flag": False}

    def handler(signum, frame):
        stop["flag"] = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop["flag"] and server.running:
            time.sleep(0.5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        code = server.stop()
    return code or 0
