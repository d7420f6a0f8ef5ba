"""`masseg-search run ...` in this process, SIGKILLed by itself part-way through one stage's work (a real kill -9:
no handler, no cleanup), at a point where that stage has already written part of its outputs.

usage: python kill_inside.py STAGE -- run --config ... (the `masseg-search` arguments)

Each hook wraps a function the stage calls and kills the process on its ``after``-th call (after the wrapped call
returns, so that much work is on disk).
"""
from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable

# stage -> (module, attribute, calls before the kill, which calls count)
HOOKS: dict[str, tuple[str, str, int, Callable[..., bool]]] = {
    "data": ("masseg_search.data.synth", "_write_video", 2, lambda *a, **k: True),
    "train-sweep": ("masseg_search.finetune.sweep.table", "ResultsTable.on_checkpoint", 1, lambda *a, **k: True),
    "tune-mss": ("masseg_search.mss.passes", "LocalPassScorer.__call__", 2, lambda *a, **k: True),
    "infer-val": ("masseg_search.inference.infer", "save_video_prediction", 3,
                  lambda video_dir, *a, **k: "/predictions/val/" in str(video_dir)),
    "select": ("masseg_search.ensemble.select", "_score_video", 2, lambda *a, **k: True),
    "infer-test": ("masseg_search.inference.infer", "save_video_prediction", 2,
                   lambda video_dir, *a, **k: "/predictions/test/" in str(video_dir)),
    "ensemble": ("masseg_search.ensemble.write", "_write_one_video", 1, lambda *a, **k: True),
    "check": ("masseg_search.pipeline.stages", "check_submission", 1, lambda *a, **k: True),
    "evaluate": ("masseg_search.evaluation.dataset", "_score_job", 1, lambda *a, **k: True),
    "report": ("masseg_search.report.page", "_mss_section", 1, lambda *a, **k: True),
}


def install(stage: str) -> None:
    """Wrap the stage's function so the process kills itself on the chosen call."""
    import importlib

    module_name, attribute, after, counts = HOOKS[stage]
    owner: Any = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        counted = args[1:] if path else args  # a method: leave out self
        if counts(*counted, **kwargs):
            calls[0] += 1
            if calls[0] >= after:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def main(argv: list[str]) -> int:
    stage, separator, *arguments = argv
    assert separator == "--", "usage: kill_inside.py STAGE -- run ..."
    install(stage)
    from masseg_search.cli import main as cli_main

    return cli_main(arguments)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
