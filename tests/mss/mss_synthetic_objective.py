"""A smooth stand-in for the engine pass, so the Optuna side is tested without a model.

Each object's J&F is a bump over (log scale, bias) peaked at an object-specific point near MASSeg's (7.5, -4), so
the search has something real to find and the expected values are computable in the test.
"""
from __future__ import annotations

import math
import time

import pandas as pd

from masseg_search.mss.search import PassConfigs, PassScores
from masseg_search.store.knobs import as_knobs


def object_jf(video: str, object_id: int, scale: float, bias: float) -> float:
    """J&F of one object under (scale, bias): peak 0.9 at scale 7.5 * (1 + 0.1 * id), bias -4 - id."""
    peak_scale, peak_bias = 7.5 * (1 + 0.1 * object_id), -4.0 - object_id
    distance = (math.log(scale / peak_scale) / 1.0) ** 2 + ((bias - peak_bias) / 8.0) ** 2
    return 0.9 * math.exp(-distance)


def validation_objects(videos: int = 4, objects_per_video: int = 2) -> pd.DataFrame:
    """video, object_id, scene_type rows: odd object ids 'small', even ones 'regular'."""
    rows = [(f"video{v}", o, "small" if o % 2 else "regular")
            for v in range(videos) for o in range(1, objects_per_video + 1)]
    return pd.DataFrame(rows, columns=["video", "object_id", "scene_type"])


class SyntheticScorer:
    """A PassScorer: scores every object of every video in each of the K slots; counts its calls."""

    def __init__(self, seconds_per_pass: float = 0.0):
        self.seconds_per_pass = seconds_per_pass
        self.calls: list[PassConfigs] = []

    def __call__(self, pass_configs: PassConfigs) -> PassScores:
        self.calls.append(pass_configs)
        if self.seconds_per_pass:
            time.sleep(self.seconds_per_pass)
        return {video: {obj: [object_jf(video, obj, *as_knobs(config).pair) for config in configs]
                        for obj, configs in objects.items()}
                for video, objects in pass_configs.items()}
