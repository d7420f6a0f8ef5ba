"""Dataset layout, validation, synthetic data, scene typing and MOSE+ assembly (no torch)."""
