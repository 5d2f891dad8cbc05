"""The quality report names every lower-precision variant that is not faster than its FP32."""

from speechtrt.tts.quality_report import _slower_than_fp32


def test_a_lower_precision_that_is_not_faster_than_its_fp32_is_named():
    variants = {"torch-fp32": {"rtf": 0.30}, "torch-int8": {"rtf": 0.32}, "ort-fp32": {"rtf": 0.20},
                "ort-int8": {"rtf": 0.19}, "ort-fp16": {"rtf": 0.20}, "trt-fp16": {"rtf": 0.5},
                "torch-fp16": {"skipped": "cpu"}}
    assert _slower_than_fp32(variants) == ["torch-int8 RTF 0.320 vs torch-fp32 0.300",
                                           "ort-fp16 RTF 0.200 vs ort-fp32 0.200",
                                           "trt-fp16 RTF 0.500 vs torch-fp32 0.300"]
