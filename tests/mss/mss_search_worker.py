"""A tune-mss worker process on the synthetic objective (used by the kill -9 and several-worker tests).

usage: python mss_search_worker.py STORAGE STUDY TRIALS BATCH SECONDS_PER_PASS HEARTBEAT GRACE
"""
from __future__ import annotations

import sys

from mss_synthetic_objective import SyntheticScorer, validation_objects

from masseg_search.config import MssSection
from masseg_search.mss.search import run_batched_search
from masseg_search.mss.studies import open_storage, open_type_studies


def main(argv: list[str]) -> int:
    storage_url, study, trials, batch, seconds, heartbeat, grace = argv
    mss = MssSection(trials=int(trials), batch=int(batch), seed=0)
    opened = open_storage(storage_url, study, heartbeat_interval=int(heartbeat), grace_period=int(grace))
    objects = validation_objects()
    studies = open_type_studies(opened, study, sorted(objects["scene_type"].unique()), mss)
    report = run_batched_search(studies, opened, objects, SyntheticScorer(float(seconds)), int(trials), int(batch),
                                space_mss=mss, progress=False)
    print("told", {t: sorted(n) for t, n in report.told.items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
