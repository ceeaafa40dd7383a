"""Moved to :mod:`mumo.data.clip_tokenizer`; this alias stays for one release."""

from mumo.data.clip_tokenizer import ClipTokenizer

__all__ = ["ClipTokenizer"]
