"""SAM2 models: building from configs and checkpoints (build), and the multi-configuration video engine (engine)."""
