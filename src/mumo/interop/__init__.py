"""Interoperability with other runtimes and formats."""

from mumo.interop.clip_tokenizer import ClipTokenizer
from mumo.interop.export import check_onnx, export_onnx

__all__ = ["ClipTokenizer", "check_onnx", "export_onnx"]
