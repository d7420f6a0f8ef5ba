"""masseg-search: SAM2 fine-tuning sweeps, mask-scaling search and fusion for MOSE-style VOS.

Light on import: nothing here pulls in torch, sam2 or ray, so `masseg-search --help`, `data` and `evaluate`
start fast.
"""
from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = PROJECT_ROOT / "configs"
