"""Use a trained model: a searchable index of image folders (and, next, the HTTP server and its page)."""

from mumo.serve.index import Hit, ImageIndex, build_faiss, update_index

__all__ = ["Hit", "ImageIndex", "build_faiss", "update_index"]
