"""ONNX export (layer 2): one graph per component, sidecar JSON with I/O and shape ranges, parity vs PyTorch.

:func:`export_graph` writes a graph and its sidecar; :func:`speechtrt.pipeline.export_component` adds the parity
check through the runtime.
"""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.export.components import Component, DimRange, TensorSpec, component, components_for
    from speechtrt.export.onnx import ExportResult, export_graph, load_sidecar, record_parity
    from speechtrt.export.parity import PARITY_TOLERANCE, ParityReport, check_parity, relative_l2

__getattr__, __dir__ = lazy_exports(__name__, {
    "components": ("Component", "DimRange", "TensorSpec", "component", "components_for"),
    "onnx": ("ExportResult", "export_graph", "load_sidecar", "record_parity"),
    "parity": ("PARITY_TOLERANCE", "ParityReport", "check_parity", "relative_l2"),
})

__all__ = [
    "Component", "DimRange", "ExportResult", "PARITY_TOLERANCE", "ParityReport", "TensorSpec", "check_parity",
    "component", "components_for", "export_graph", "load_sidecar", "record_parity", "relative_l2",
]
