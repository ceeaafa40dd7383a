"""Interoperability with other runtimes and formats."""

from mumo.data.clip_tokenizer import ClipTokenizer
from mumo.interop.export import check_onnx, export_onnx
from mumo.interop.hf_bert import load_hf_bert

__all__ = ["ClipTokenizer", "check_onnx", "export_onnx", "load_hf_bert"]
