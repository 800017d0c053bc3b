"""Resource helpers that stand alone (usable without RAG-Anything): memory, CPU, GPU, malloc."""
