"""The package's layers (README "Architecture"): a module imports only from its own layer or the ones below it,
function-level imports included."""

import re
from pathlib import Path

import speechtrt

PACKAGE = Path(speechtrt.__file__).parent
LAYER = {
    "errors": 0, "config": 0, "vocab": 0, "files": 0, "lazy": 0, "reporting": 0, "__init__": 0,
    "models": 1, "export": 2, "quantize": 3, "engines": 4, "runtime": 5, "pipeline": 5.5,
    "tts": 6, "asr": 6, "stream": 6, "serve": 7, "triton": 7, "bench": 8, "commands": 9, "cli": 9,
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+speechtrt\.(\w+)", re.M)


def _layer_of(path: Path) -> float:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return LAYER[top]


def test_every_package_has_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert tops <= set(LAYER), tops - set(LAYER)


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _layer_of(path)
        for target in IMPORT.findall(path.read_text()):
            if LAYER[target] > own:
                upward.append(f"{path.relative_to(PACKAGE)} (layer {own}) imports speechtrt.{target} "
                              f"(layer {LAYER[target]})")
    assert not upward, "\n".join(upward)
