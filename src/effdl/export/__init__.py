"""Export to deployment formats: ONNX (run by onnxruntime).

Example:
    >>> from effdl.export import export_onnx  # needs the onnx extra: pip install effdl[onnx]
"""

from effdl.export.onnx import OnnxModel, export_onnx, onnx_session, run_onnx

__all__ = ["OnnxModel", "export_onnx", "onnx_session", "run_onnx"]
