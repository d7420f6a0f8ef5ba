"""Inference (`masseg-search infer`): propagate every object of a split under K configurations in one engine pass
and store the low-res logits (:mod:`masseg_search.store.predictions`). Torch loads only when a model runs."""
from masseg_search.inference.infer import run_inference, write_masks

__all__ = ["run_inference", "write_masks"]
