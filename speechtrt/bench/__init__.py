"""Benchmarks (layer 7): timing, memory/NVML probes, reports, `speechtrt bench` (TTS) and `speechtrt profile`."""
