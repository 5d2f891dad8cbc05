"""English text installed from a package: the entries of Debian's fortune files (``fortunes``, ``fortunes-min``).

One reader for every consumer — TTS calibration takes whole entries, ASR data synthesis single speakable
sentences — so both see the same text the same way. Nothing is copied into the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

FORTUNES_DIR = Path("/usr/share/games/fortunes")

_ENTRY_SEPARATOR = re.compile(r"^%\s*$", flags=re.M)


def fortune_files(directory: Path = FORTUNES_DIR, names: Iterable[str] | None = None,
                  skip: Iterable[str] = ()) -> list[Path]:
    """Fortune files in ``directory``: the given ``names`` that exist, or every data file (no suffix) not skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    if names is not None:
        return [directory / n for n in names if (directory / n).is_file()]
    skip = set(skip)
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and not p.suffix and not p.name.startswith(".") and p.name not in skip)


def fortune_entries(files: Iterable[Path]) -> Iterator[str]:
    """Every entry of the files (entries end at a line holding only ``%``), whitespace collapsed, in file order."""
    for path in files:
        raw = Path(path).read_text(encoding="utf-8", errors="replace")
        for entry in _ENTRY_SEPARATOR.split(raw):
            flat = " ".join(entry.split())
            if flat:
                yield flat
