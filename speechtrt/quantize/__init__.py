"""Layer 3: calibration sets from real text and speech (calib), FP16/INT8 ONNX graphs with ModelOpt (precision),
and their fidelity against FP32 (fidelity). Heavy imports (ModelOpt, ONNX Runtime) stay inside the functions."""
