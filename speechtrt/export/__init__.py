"""ONNX export (layer 2): one graph per component, sidecar JSON with I/O and shape ranges, parity vs PyTorch."""

from speechtrt.export.components import COMPONENT_NAMES, Component, DimRange, TensorSpec, component, components_for
from speechtrt.export.onnx import ExportResult, export_component, load_sidecar
from speechtrt.export.parity import PARITY_TOLERANCE, ParityReport, check_parity, relative_l2

__all__ = [
    "COMPONENT_NAMES", "Component", "DimRange", "ExportResult", "PARITY_TOLERANCE", "ParityReport", "TensorSpec",
    "check_parity", "component", "components_for", "export_component", "load_sidecar", "relative_l2",
]
