"""Triton Python-backend models. Each ``<name>.py`` here is copied into a repository as ``<model>/1/model.py`` and
runs inside the backend's stub, where ``triton_python_backend_utils`` exists: ``graph`` (one stateless graph),
``asr_stream`` (the streaming step, state per sequence), ``tts`` (the decoupled in-flight TTS loop)."""
