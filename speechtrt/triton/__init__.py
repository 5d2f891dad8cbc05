"""Scale-out on Triton Inference Server (layer 7, beside ``serve/``): map requests onto the same runtime, own no
inference.

* :mod:`speechtrt.triton.repository` — ``speechtrt triton export``: the model repository (``config.pbtxt`` generated
  from graph sidecars, checked against plan manifests), CPU and GPU kinds.
* :mod:`speechtrt.triton.models` — the Python-backend models copied into a repository as ``model.py``.
* :mod:`speechtrt.triton.server` — start/stop the ``tritonserver`` bundled with ``nvidia-pytriton`` (its own
  virtualenv), readiness, the libpython fix.
* :mod:`speechtrt.triton.client` — ``tritonclient`` adapters for the load shapes: offline ASR batches, streaming
  sequences over gRPC streams, decoupled TTS.

Nothing is imported here: the client needs ``tritonclient`` and the models need Triton's Python backend.
"""
