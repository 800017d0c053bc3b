"""The content-addressed parse cache and its store backends."""
