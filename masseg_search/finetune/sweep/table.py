"""The sweep's results table: one row per trial (parameters, status, epochs, best and last validation J&F, best
checkpoint) as ``results.csv`` / ``results.parquet``, and ``best_checkpoint.txt``, rewritten after every epoch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.finetune.sweep.trial import CHECKPOINT_FILE, METRIC

TABLE_NAME = "results"
BEST_FILE = "best_checkpoint.txt"


def _checkpoint_file(path: str | None) -> str | None:
    return None if not path else str(Path(path) / CHECKPOINT_FILE)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class ResultsTable:
    """Rows per trial, written as CSV + Parquet (and the best checkpoint path) after every change.

    Ray calls it as a Tune callback (:meth:`as_callback`); :meth:`from_results` rebuilds it from a ResultGrid.
    """

    def __init__(self, folder: Path, param_keys: list[str], max_epochs: int):
        self.folder = Path(folder)
        self.param_keys = list(param_keys)
        self.max_epochs = int(max_epochs)
        self.rows: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        """Keep the rows of an interrupted run (a restored sweep does not report finished trials again)."""
        import pandas as pd

        path = self.folder / f"{TABLE_NAME}.csv"
        if path.is_file() and path.stat().st_size > 0:
            for row in pd.read_csv(path).to_dict("records"):
                self.rows[str(row["trial_id"])] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}

    def row(self, trial_id: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.rows.setdefault(trial_id, {"trial_id": trial_id, "status": "RUNNING", "epochs_run": 0,
                                              "best_val_jf": None, "best_epoch": None, "last_val_jf": None,
                                              "checkpoint": None})
        for key in self.param_keys:
            if key in params:
                row[key] = params[key]
        return row

    def on_result(self, trial_id: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        row = self.row(trial_id, params)
        row["epochs_run"] = int(result.get("training_iteration", result.get("epoch", 0)) or 0)
        value = result.get(METRIC)
        row["last_val_jf"] = value if _finite(value) else None
        if _finite(value) and (row["best_val_jf"] is None or value > row["best_val_jf"]):
            row["best_val_jf"], row["best_epoch"] = value, int(result.get("epoch", row["epochs_run"]))
            if result.get("checkpoint_path"):  # TorchTrainer trials: the checkpoint already in storage
                row["checkpoint"] = _checkpoint_file(result["checkpoint_path"])
        self.write()

    def on_checkpoint(self, trial_id: str, params: dict[str, Any], last_result: dict[str, Any], path: str) -> None:
        row = self.row(trial_id, params)
        if _finite(last_result.get(METRIC)) and last_result.get(METRIC) == row["best_val_jf"]:
            row["checkpoint"] = _checkpoint_file(path)
            self.write()

    def on_status(self, trial_id: str, params: dict[str, Any], status: str) -> None:
        self.row(trial_id, params)["status"] = status
        self.write()

    def best(self) -> tuple[str | None, float]:
        scored = [r for r in self.rows.values() if _finite(r.get("best_val_jf")) and r.get("checkpoint")]
        if not scored:
            return None, float("nan")
        top = max(scored, key=lambda r: r["best_val_jf"])
        return top["checkpoint"], float(top["best_val_jf"])

    def write(self) -> None:
        """CSV, Parquet and best_checkpoint.txt, each written to a temporary name and renamed."""
        import io

        import pandas as pd

        for row in self.rows.values():  # ASHA's stop leaves Tune's status TERMINATED: say it was stopped early
            row["stopped_early"] = bool(row.get("status") == "TERMINATED" and int(row.get("epochs_run") or 0) < self.max_epochs)
        columns = ["trial_id", "status", *self.param_keys, "epochs_run", "stopped_early", "best_val_jf", "best_epoch",
                   "last_val_jf", "checkpoint"]
        frame = pd.DataFrame(list(self.rows.values()))
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
        frame = frame.sort_values("trial_id", kind="stable")
        atomic_write_bytes(self.folder / f"{TABLE_NAME}.csv", frame.to_csv(index=False).encode())
        buffer = io.BytesIO()
        frame.astype({"checkpoint": "string", "status": "string", "trial_id": "string"}).to_parquet(buffer, index=False)
        atomic_write_bytes(self.folder / f"{TABLE_NAME}.parquet", buffer.getvalue())
        best_path, _ = self.best()
        if best_path:
            atomic_write_bytes(self.folder / BEST_FILE, (best_path + "\n").encode())

    def as_callback(self) -> Any:
        """A Tune callback that feeds this table."""
        from ray.tune import Callback

        table = self

        class _TableCallback(Callback):
            def setup(self, **info):  # a restored sweep unpickles this callback: start from the table on disk
                table.rows = {}
                table._load()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                table.on_result(trial.trial_id, trial.config, result)

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                table.on_checkpoint(trial.trial_id, trial.config, trial.last_result or {}, checkpoint.path)

            def on_trial_complete(self, iteration, trials, trial, **info):
                table.on_status(trial.trial_id, trial.config, "TERMINATED")

            def on_trial_error(self, iteration, trials, trial, **info):
                table.on_status(trial.trial_id, trial.config, "ERROR")

        return _TableCallback()

    def update_from_results(self, results: Any) -> None:
        """Fill every row from a ``ResultGrid`` (the authority at the end, restored trials included)."""
        for result in results:
            trial_id = result.metrics.get("trial_id") if result.metrics else None
            if trial_id is None:  # nothing readable for this trial: the callback's row stands
                continue
            params = dict(result.config or {})
            row = self.row(str(trial_id), params)
            if result.error:  # other statuses come from the callback (an interrupted trial is not TERMINATED)
                row["status"] = "ERROR"
            frame = result.metrics_dataframe
            if frame is not None and METRIC in frame and frame[METRIC].notna().any():
                best_index = frame[METRIC].idxmax()
                row["best_val_jf"] = float(frame[METRIC][best_index])
                row["best_epoch"] = int(frame["epoch"][best_index]) if "epoch" in frame else None
                row["last_val_jf"] = float(frame[METRIC].iloc[-1])
                row["epochs_run"] = int(frame["training_iteration"].max()) if "training_iteration" in frame else len(frame)
            best = [(ckpt, m) for ckpt, m in result.best_checkpoints if _finite(m.get(METRIC))]
            if best:
                checkpoint, _ = max(best, key=lambda item: item[1][METRIC])
                row["checkpoint"] = _checkpoint_file(checkpoint.path)
            elif result.metrics and result.metrics.get("checkpoint_path") and row.get("checkpoint") is None:
                row["checkpoint"] = _checkpoint_file(result.metrics["checkpoint_path"])
        self.write()
