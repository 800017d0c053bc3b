import os

# The embedded defaults must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ingest() reads RagoptConfig.from_env(): without this it would share the user's parse cache
# across tests. Tests that use the cache hand one in.
os.environ.setdefault("ENABLE_PARSE_CACHE", "false")
