"""Inference (`masseg-search infer`): propagate every object of a split under K configurations in one engine pass
and store the low-res logits (:mod:`masseg_search.store.predictions`); ``distributed`` spreads the videos over the
workers of a Ray cluster (`infer --ray-address`); or store another model family as a view (``--import-masks``: any
tool's masks; ``--engine cutie``). Torch loads only when a model runs."""
from masseg_search.inference.cutie_infer import run_cutie_inference
from masseg_search.inference.distributed import DistributedInferResult, run_inference_anywhere, run_inference_on_ray
from masseg_search.inference.import_masks import import_masks
from masseg_search.inference.infer import build_engine, run_inference, write_masks

__all__ = ["DistributedInferResult", "build_engine", "import_masks", "run_cutie_inference", "run_inference",
           "run_inference_anywhere", "run_inference_on_ray", "write_masks"]
