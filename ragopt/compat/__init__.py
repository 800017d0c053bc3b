"""The one place ragopt touches private names of RAG-Anything and LightRAG (pinned by tests/compat)."""
