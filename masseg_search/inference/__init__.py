"""Inference (`masseg-search infer`): propagate every object of a split under K configurations in one engine pass
and store the low-res logits (:mod:`masseg_search.store.predictions`); ``distributed`` spreads the videos over the
workers of a Ray cluster (`infer --ray-address`). Torch loads only when a model runs."""
from masseg_search.inference.distributed import DistributedInferResult, run_inference_anywhere, run_inference_on_ray
from masseg_search.inference.infer import build_engine, run_inference, write_masks

__all__ = ["DistributedInferResult", "build_engine", "run_inference", "run_inference_anywhere",
           "run_inference_on_ray", "write_masks"]
