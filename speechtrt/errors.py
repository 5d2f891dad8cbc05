"""The project's own exceptions.

Every error a user can cause (bad flag, bad text, missing file, an engine built for another GPU) is raised as a
:class:`SpeechTRTError` whose message says what was wrong and what to do. The CLI prints that message on one line and
exits with code 1; anything else is a bug and keeps its traceback.
"""


class SpeechTRTError(Exception):
    """Base class: a problem the user can fix. The message names it and the fix."""


class InputError(SpeechTRTError, ValueError):
    """Bad user input: unknown model name, text outside the vocabulary, malformed audio."""


class ExportError(SpeechTRTError):
    """An ONNX export failed or its graph does not match PyTorch within tolerance."""


class BuildError(SpeechTRTError):
    """A TensorRT engine could not be built for the requested target."""


class EngineLoadError(SpeechTRTError):
    """An engine plan cannot be used here (wrong GPU, wrong TensorRT version, corrupt or missing file)."""


class CapacityError(SpeechTRTError):
    """A request was refused because a bounded resource (slots, queue, memory) is full."""
