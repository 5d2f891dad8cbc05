"""speechtrt: export, quantize, compile and serve speech models with TensorRT."""

__version__ = "0.1.0"
