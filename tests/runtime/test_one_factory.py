"""``open_runner`` is the only place a runner is made: nothing outside ``speechtrt/runtime/`` creates an ONNX
Runtime session, deserializes a TensorRT engine or constructs one of the runtime's runner classes."""

import re
from pathlib import Path

import speechtrt

PACKAGE = Path(speechtrt.__file__).parent
MADE_ONLY_IN_RUNTIME = re.compile(
    r"\b(InferenceSession|deserialize_cuda_engine|OrtRunner|TrtRunner|TorchRunner|ReferenceRunner|GraphedRunner)\(")
# (file, why) — places that use one of these for something other than running a component
ALLOWED = {
    "engines/builder.py": "the engine inspector reads back the plan the builder just wrote (build-time check)",
}


def test_no_runner_is_constructed_outside_the_runtime():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("runtime/") or rel in ALLOWED:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if MADE_ONLY_IN_RUNTIME.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "runners made outside speechtrt.runtime.open_runner:\n" + "\n".join(found)


def test_the_allowed_exceptions_still_exist():
    for rel in ALLOWED:  # an allowance for code that is gone must go too
        assert MADE_ONLY_IN_RUNTIME.search((PACKAGE / rel).read_text()), rel
