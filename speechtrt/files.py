"""Files and folders the commands write: checked before any work starts, hashed when recorded."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from speechtrt.errors import InputError


def check_writable(folder: str | Path, flag: str = "--out") -> Path:
    """Create ``folder`` if needed and prove it is writable, or raise an InputError naming ``flag``.

    Commands call this before any long work, so a typo in an output path fails in a second, not after the run.
    """
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".speechtrt-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to output folder {str(out)!r} ({flag}: {exc.strerror or exc}); "
                         "choose a folder you can write to") from exc
    return out


def check_writable_file(path: str | Path, flag: str = "--output") -> Path:
    """The folder of ``path`` checked writable (see :func:`check_writable`); returns ``path``."""
    path = Path(path)
    check_writable(path.parent if str(path.parent) else Path("."), flag)
    if path.is_dir():
        raise InputError(f"{flag} {str(path)!r} is a folder; give a file name")
    return path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def quiet_native_output():
    """Silence what native libraries print straight to file descriptors 1 and 2 (the exporters' shape-inference
    notes, the torch profiler's start/stop lines), so the console keeps only the command's own lines."""
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
