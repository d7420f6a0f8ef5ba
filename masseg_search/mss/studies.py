"""Optuna side of tune-mss: storage URLs, seeded samplers, one study per scene type, and trial heartbeats.

Storage (``--storage`` or ``mss.storage``):

- nothing: ``sqlite:///studies/<study>.db`` (one process);
- ``journal:PATH`` or a path ending in ``.log``/``.journal``/``.jsonl``: Optuna's journal file (several processes
  on one machine, file locks);
- ``postgresql://user@host:port/db`` (several machines). The password comes from the environment (libpq reads
  ``PGPASSWORD`` or ``~/.pgpass``), never from a URL in a config or on a command line.

Heartbeats: a process records a heartbeat for every trial it has in flight; a trial RUNNING without a heartbeat
for ``grace_period`` seconds (its process was killed) is failed and re-enqueued once with the same parameters
(``RetryHeartbeatStaleTrialCallback``). RDB storages (SQLite, PostgreSQL) use Optuna's own heartbeat table
(judged on the database's clock); journal files have none, so there the heartbeat is a trial system attribute with
the same semantics. A trial whose process died inside ``ask``, before its first heartbeat, is caught too: it lacks
the heartbeat mark and is failed once its start is older than the grace period.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import optuna
from filelock import FileLock
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from masseg_search.config import KnobDimension, MssSection
from masseg_search.errors import MassegError
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT
from masseg_search.store.knobs import Knobs, as_knobs

STUDIES_DIR = Path("studies")
PARAM_SCALE = "scale"
PARAM_BIAS = "bias"
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
KNOBS_ATTR = "knobs"  # study user attribute: the knobs the study searches (a resumed study must search the same)
HEARTBEAT_ATTR = "masseg_heartbeat"  # unix time of the last heartbeat (journal) / of the first one (RDB: the mark)

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize.")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass
class StudyStorage:
    """An opened Optuna storage and how its heartbeats work."""

    storage: BaseStorage
    url: str  # what a user passes to optuna-dashboard (no password)
    heartbeat_interval: int
    grace_period: int

    @property
    def native_heartbeat(self) -> bool:
        """True for RDB storages (Optuna's heartbeat table); False for journal files (system attribute)."""
        return isinstance(self.storage, RDBStorage)


def default_storage_url(study: str) -> str:
    """``sqlite:///studies/<study>.db`` (relative to the working directory)."""
    return f"sqlite:///{STUDIES_DIR / (_safe_name(study) + '.db')}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def journal_path(url: str) -> Path | None:
    """The journal file a storage string names, or None if it is not a journal."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def _reject_password(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise MassegError(f"not a storage URL: {url!r}", fix="use sqlite:///studies/val.db, journal:studies/val.log "
                          "or postgresql://user@host:5432/db") from None
    if parsed.password:
        raise MassegError("the storage URL contains a password", fix="remove it from the URL and export PGPASSWORD "
                          "(or use ~/.pgpass); passwords never go in configs or command lines")


def _postgres_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only that driver is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _sqlite_write_ahead_log(storage: RDBStorage) -> None:
    """WAL journal with synchronous=NORMAL: one fsync per checkpoint instead of per commit (a killed process
    loses nothing committed; only a power cut may drop the last commits)."""
    from sqlalchemy import event

    def _pragmas(connection: object, _record: object) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # connections opened before the listener reconnect with the pragmas


def _schema_creation_race(exc: BaseException) -> bool:
    """True for the errors a database raises when two clients create Optuna's tables at the same moment."""
    message = str(exc)
    return any(text in message for text in ("already exists", "UNIQUE constraint failed", "duplicate key value"))


def open_storage(url: str | None, study: str, heartbeat_interval: int = 10, grace_period: int | None = None) -> StudyStorage:
    """Open the storage named by ``url`` (None = the SQLite default), with heartbeats enabled."""
    url = url or default_storage_url(study)
    grace = grace_period if grace_period is not None else 3 * heartbeat_interval
    callback = RetryHeartbeatStaleTrialCallback(max_retry=1)
    journal = journal_path(url)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        try:
            # a worker killed while it holds the file lock leaves it behind: others break it after this long
            lock = JournalFileSymlinkLock(str(journal), grace_period=max(3, min(30, grace)))
            storage: BaseStorage = JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))
        except Exception as exc:  # optuna raises plain errors on a corrupt log
            raise MassegError(f"cannot open the journal file ({exc})", journal, "pass a writable path or a new file") from None
        return StudyStorage(storage, str(journal), heartbeat_interval, grace)
    _reject_password(url)
    url = _postgres_driver(url)
    engine_kwargs: dict = {}
    creation_lock: contextlib.AbstractContextManager = contextlib.nullcontext()
    if url.startswith("sqlite:///"):
        database = Path(url[len("sqlite:///"):])
        database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
        # two processes creating the schema at once collide on alembic_version: one creates, the other opens
        creation_lock = FileLock(str(database) + ".create.lock", timeout=120)
    for attempt in range(5):
        try:
            with creation_lock:
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                     grace_period=grace, heartbeat_stale_trial_callback=callback)
            if url.startswith("sqlite:///"):
                _sqlite_write_ahead_log(storage)
            return StudyStorage(storage, url, heartbeat_interval, grace)
        except Exception as exc:  # sqlalchemy's OperationalError / ImportError for a missing driver
            if _schema_creation_race(exc) and attempt < 4:
                time.sleep(1.0)  # another worker (another machine) created the tables at the same moment: open them
                continue
            raise MassegError(f"cannot open storage {url!r} ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                              fix="check the URL, that the server runs, and PGPASSWORD for PostgreSQL") from None
    raise AssertionError("unreachable")


def search_distributions(mss: MssSection) -> dict[str, BaseDistribution]:
    """Optuna distributions of every knob ``mss.space`` searches (scale and bias first): float and int ranges (log
    or linear, optionally stepped) and categorical choices; TPE samples the mixed space jointly."""
    return {name: _distribution(dimension) for name, dimension in mss.space.searched().items()}


def _distribution(dimension: KnobDimension) -> BaseDistribution:
    if dimension.type == "categorical":
        return CategoricalDistribution(list(dimension.choices))
    if dimension.type == "int":
        return IntDistribution(int(dimension.low), int(dimension.high), log=dimension.log, step=int(dimension.step or 1))
    return FloatDistribution(float(dimension.low), float(dimension.high), log=dimension.log, step=dimension.step)


def grid_values(dimension: KnobDimension, points: int) -> list:
    """The grid sampler's values (and the learned policy's candidate grid): every choice; a stepped range's every
    step; an int range's every value when it has at most ``points``; else ``points`` values spaced evenly
    (geometrically for log), rounded for ints."""
    if dimension.type == "categorical":
        return list(dimension.choices)
    whole = dimension.type == "int"
    if dimension.step is not None:
        values = np.arange(dimension.low, dimension.high + dimension.step / 2, dimension.step)
    elif whole and dimension.high - dimension.low + 1 <= points:
        values = np.arange(dimension.low, dimension.high + 1)
    elif dimension.log:
        values = np.geomspace(dimension.low, dimension.high, points)
    else:
        values = np.linspace(dimension.low, dimension.high, points)
    return sorted({int(round(v)) for v in values}) if whole else [float(v) for v in values]


def knobs_from_params(params: dict) -> Knobs:
    """The configuration a trial's parameters describe (a knob without a parameter is at its default)."""
    return as_knobs(dict(params))


def ask_trial(type_study: optuna.Study, mss: MssSection) -> optuna.Trial:
    """Ask one trial and suggest every searched knob, define-by-run; an enqueued baseline suggests only scale and
    bias, so it runs at default knobs (its other knobs are absent from its parameters, not set to some value)."""
    trial = type_study.ask()
    distributions = search_distributions(mss)
    names = [PARAM_SCALE, PARAM_BIAS] if trial.user_attrs.get("baseline") else list(distributions)
    for name in names:
        distribution = distributions[name]
        if isinstance(distribution, CategoricalDistribution):
            trial.suggest_categorical(name, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
        else:
            trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    return trial


def type_seed(seed: int, scene_type: str) -> int:
    """A per-study seed that depends on the run seed and the scene type name only (reproducible)."""
    return (int(seed) * 1_000_003 + zlib.crc32(scene_type.encode())) % (2**31)


def make_sampler(name: str, seed: int, mss: MssSection) -> optuna.samplers.BaseSampler:
    """A seeded sampler: tpe (multivariate, constant liar: good for K trials asked at once), gp, cmaes, random, grid."""
    if name == "tpe":
        # baselines lack the memory knobs' parameters: those are sampled univariately (no warning each trial)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:  # optuna imports it lazily and would fail at the first ask
            raise MassegError("the cmaes sampler needs the 'cmaes' package", fix="pip install cmaes, or use --sampler tpe")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {name: grid_values(dimension, mss.grid_points) for name, dimension in mss.space.searched().items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise MassegError(f"unknown sampler {name!r}", fix="use one of tpe, gp, cmaes, random, grid")


def type_study_name(study: str, scene_type: str) -> str:
    """``<study>/<scene_type>``: the Optuna study searching one scene type."""
    return f"{study}/{scene_type}"


def baseline_params() -> list[dict[str, float]]:
    """SAM2's default (20, -10) and MASSeg's hand-found (7.5, -4.0) at default knobs, enqueued first in every study."""
    return [{PARAM_SCALE: SAM2_DEFAULT[0], PARAM_BIAS: SAM2_DEFAULT[1]}, {PARAM_SCALE: MASSEG_BEST[0], PARAM_BIAS: MASSEG_BEST[1]}]


def open_type_studies(opened: StudyStorage, study: str, scene_types: Iterable[str], mss: MssSection,
                      sampler: str | None = None, seed: int | None = None) -> dict[str, optuna.Study]:
    """Create or load ``<study>/<scene_type>`` for every type, seeded, with the two baselines enqueued once. A study
    searches the knobs of ``mss.space``; resuming one with other knobs is an error (its trials would not compare)."""
    sampler_name = sampler or mss.sampler
    run_seed = mss.seed if seed is None else seed
    distributions = search_distributions(mss)
    studies = {}
    for scene_type in scene_types:
        name = type_study_name(study, scene_type)
        type_study = optuna.create_study(
            storage=opened.storage, study_name=name, direction="maximize",
            sampler=make_sampler(sampler_name, type_seed(run_seed, scene_type), mss), load_if_exists=True)
        searched = type_study.user_attrs.get(KNOBS_ATTR)
        if searched is None:
            type_study.set_user_attr(KNOBS_ATTR, list(distributions))
        elif list(searched) != list(distributions):
            raise MassegError(f"study {name!r} searches the knobs {','.join(searched)}, this run asks for "
                              f"{','.join(distributions)}", opened.url,
                              f"pass --knobs {','.join(searched)} to resume it, or a new --study name")
        for params in baseline_params():
            if all(distributions[name]._contains(distributions[name].to_internal_repr(value)) for name, value in params.items()):
                type_study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
        studies[scene_type] = type_study
    return studies


def record_heartbeat(opened: StudyStorage, trial_ids: Iterable[int]) -> None:
    """Mark the trials as alive now."""
    for trial_id in trial_ids:
        if opened.native_heartbeat:
            opened.storage.record_heartbeat(trial_id)
            continue
        try:
            opened.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # told meanwhile


def start_heartbeat(opened: StudyStorage, trial_id: int) -> None:
    """First heartbeat, right after ask. Marks the trial (system attribute) as heart-beating, so a trial still
    RUNNING without the mark after the grace period is known to have died inside ``ask``: Optuna's RDB check skips
    trials that never recorded a heartbeat, and they would otherwise stay RUNNING forever."""
    if opened.native_heartbeat:
        opened.storage.record_heartbeat(trial_id)  # before the mark: a marked trial always has a heartbeat row
    opened.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


def _fail_and_retry(opened: StudyStorage, type_study: optuna.Study, trial_id: int) -> bool:
    """Fail a stale trial and enqueue its parameters once more; False if another process got there first."""
    try:
        if not opened.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process failed or finished it first
    RetryHeartbeatStaleTrialCallback(max_retry=1)(type_study, opened.storage.get_trial(trial_id))
    return True


def fail_stale_trials(opened: StudyStorage, type_study: optuna.Study) -> list[int]:
    """Fail trials whose process stopped heart-beating and re-enqueue their parameters; returns their numbers."""
    failed = []
    if opened.native_heartbeat:
        before = {t.number for t in type_study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        optuna.storages.fail_stale_trials(type_study)  # Optuna's check on its heartbeat table (database clock)
        failed = sorted({t.number for t in type_study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    now = time.time()
    for trial in type_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        marked = HEARTBEAT_ATTR in trial.system_attrs
        if opened.native_heartbeat and marked:
            continue  # covered by Optuna's check above
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        last = float(trial.system_attrs.get(HEARTBEAT_ATTR, started))
        if now - last > opened.grace_period and _fail_and_retry(opened, type_study, trial._trial_id):
            failed.append(trial.number)
    return failed


class HeartbeatThread:
    """Records heartbeats for a set of trials every ``interval`` seconds while an engine pass runs."""

    def __init__(self, opened: StudyStorage, trial_ids: list[int]):
        self.opened = opened
        self.trial_ids = set(trial_ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mss-heartbeat", daemon=True)

    def discard(self, trial_id: int) -> None:
        """Stop beating for a trial that finished early (pruned)."""
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _beat(self) -> None:
        while True:
            with self._lock:
                alive = sorted(self.trial_ids)
            record_heartbeat(self.opened, alive)
            if self._stop.wait(self.opened.heartbeat_interval):
                return

    def __enter__(self) -> "HeartbeatThread":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
