"""The stages chained into one resumable run: `masseg-search demo` on the bundled synthetic config."""
from masseg_search.pipeline.demo import run_demo

__all__ = ["run_demo"]
