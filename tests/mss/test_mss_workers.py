"""Resume after kill -9, and several worker processes on one study (journal file, PostgreSQL)."""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from masseg_search.config import MssSection
from masseg_search.mss.studies import open_storage, open_type_studies

WORKER = Path(__file__).with_name("mss_search_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
TYPES = ["regular", "small"]


def _worker(url: str, trials: int, batch: int, seconds: float, heartbeat: int = 1, grace: int = 2,
            env: dict | None = None) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=f"{PROJECT_ROOT}{os.pathsep}{WORKER.parent}", **(env or {}))
    return subprocess.Popen([sys.executable, str(WORKER), url, "val", str(trials), str(batch), str(seconds),
                             str(heartbeat), str(grace)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment)


def _studies(url: str, env: dict | None = None):
    if env:
        os.environ.update(env)
    opened = open_storage(url, "val", heartbeat_interval=1, grace_period=2)
    return open_type_studies(opened, "val", TYPES, MssSection(seed=0))


def _finish(process: subprocess.Popen, timeout: float = 120) -> dict[str, list[int]]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    told_line = [line for line in out.splitlines() if line.startswith("told ")][-1]
    return ast.literal_eval(told_line[len("told "):])


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_kill_9_mid_study_resumes_without_losing_or_redoing_trials(tmp_path, backend):
    url = f"sqlite:///{tmp_path}/val.db" if backend == "sqlite" else f"journal:{tmp_path}/val.log"
    process = _worker(url, trials=12, batch=3, seconds=1.5)
    studies = None
    deadline = time.time() + 60
    while time.time() < deadline:  # wait for one finished pass and the next pass in flight
        time.sleep(0.3)
        if not list(tmp_path.glob("val.*")):
            continue
        studies = _studies(url)
        states = [[t.state for t in s.trials] for s in studies.values()]
        if all(st.count(TrialState.COMPLETE) >= 3 and TrialState.RUNNING in st for st in states):
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert studies is not None
    before = {name: {t.number: (t.params, t.value, t.datetime_complete) for t in s.trials if t.state == TrialState.COMPLETE}
              for name, s in studies.items()}
    running = {name: {t.number for t in s.trials if t.state == TrialState.RUNNING} for name, s in studies.items()}
    assert all(before.values()) and all(running.values())

    told = _finish(_worker(url, trials=12, batch=3, seconds=0.0))
    after = _studies(url)
    for name, type_study in after.items():
        trials = {t.number: t for t in type_study.trials}
        for number, (params, value, finished) in before[name].items():  # nothing finished was lost or redone
            assert trials[number].state == TrialState.COMPLETE
            assert (trials[number].params, trials[number].value, trials[number].datetime_complete) == (params, value, finished)
            assert number not in told[name]
        for number in running[name]:  # the dead worker's in-flight trials were failed by heartbeat and retried
            assert trials[number].state == TrialState.FAIL
            retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]
            assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
            # same parameters (a worker killed inside ask may have written only the first one)
            assert {key: retried[0].params[key] for key in trials[number].params} == trials[number].params
        assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 12
        assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _check_workers(url: str, trials: int, batch: int, told_by: list[dict[str, list[int]]], env: dict | None = None):
    for name, type_study in _studies(url, env).items():
        complete = [t.number for t in type_study.trials if t.state == TrialState.COMPLETE]
        # none lost, none left running (a baseline both workers enqueued at once runs once, its copy is failed)
        assert not [t for t in type_study.trials if t.state != TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
        per_worker = [set(told.get(name, [])) for told in told_by]
        assert all(per_worker), "every worker did part of the study"
        assert set.intersection(*per_worker) == set()  # no trial told twice
        assert set.union(*per_worker) == set(complete)
        assert trials <= len(complete) <= trials + batch * (len(told_by) - 1)
        baselines = [(t.params["scale"], t.params["bias"]) for t in type_study.trials
                     if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE]
        assert sorted(baselines) == [(7.5, -4.0), (20.0, -10.0)]  # run once although both workers may enqueue them
        copies = [t for t in type_study.trials if "duplicate_of" in t.user_attrs]
        assert all(t.state == TrialState.FAIL and type_study.trials[t.user_attrs["duplicate_of"]].user_attrs.get("baseline")
                   for t in copies)


def test_two_workers_share_a_journal_file(tmp_path):
    url = f"journal:{tmp_path}/val.log"
    workers = [_worker(url, trials=12, batch=2, seconds=0.4) for _ in range(2)]
    told_by = [_finish(worker) for worker in workers]
    _check_workers(url, 12, 2, told_by)


def test_two_workers_share_postgresql(postgres_url):
    url, env = postgres_url
    workers = [_worker(url, trials=12, batch=2, seconds=0.4, env=env) for _ in range(2)]
    told_by = [_finish(worker) for worker in workers]
    _check_workers(url, 12, 2, told_by, env)


_OPEN_AT = """
import sys, time
from masseg_search.mss.studies import open_storage
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
open_storage(sys.argv[1], "val").storage.get_all_studies()
"""


def test_processes_opening_a_new_sqlite_file_at_once_all_succeed(tmp_path):
    """Schema creation is serialised: racing processes once failed on alembic_version's UNIQUE constraint."""
    for round_ in range(3):
        url = f"sqlite:///{tmp_path}/race{round_}.db"
        start = time.time() + 4.0  # every process imported and waiting before the same instant
        processes = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(start)], stderr=subprocess.PIPE, text=True)
                     for _ in range(6)]
        errors = [process.communicate(timeout=120)[1] for process in processes]
        assert [process.returncode for process in processes] == [0] * 6, errors
