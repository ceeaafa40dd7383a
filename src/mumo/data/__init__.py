"""Data: tokenizer (this issue), data sets and transforms (next ones)."""

from mumo.data.tokenizer import SPECIAL_TOKENS, TokenBatch, Tokenizer

__all__ = ["SPECIAL_TOKENS", "TokenBatch", "Tokenizer"]
