"""What the stages leave on disk for the next one: stored predictions (config ids, views, low-res logits:
``predictions``), the per-scene-type best configurations (``best_configs``), tune-mss's result folder
(``mss_results``) and learned per-object policies (``policy``, read wherever best_configs is). No torch here."""
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, BestConfigs, load_best_configs, save_best_configs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.knobs import Knobs, as_knobs, knobs_id, parse_knobs_id
from masseg_search.store.policy import Policy, load_policy, save_policy
from masseg_search.store.predictions import config_id, parse_config_id, split_config_id, split_knobs_id

__all__ = [
    "MASSEG_BEST", "SAM2_DEFAULT", "BestConfigs", "Knobs", "MssResults", "Policy", "as_knobs", "config_id", "knobs_id",
    "load_best_configs", "load_policy", "parse_config_id", "parse_knobs_id", "save_best_configs", "save_policy",
    "split_config_id", "split_knobs_id",
]
