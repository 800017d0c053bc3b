"""The ingestion engine and the optimizations that install into a RAGAnything.

Kept free of imports: parse worker processes import ``ragopt.engine.parse_pool`` only.
"""
