"""Helpers shared by the engine benchmarks: per-stage timing of SAM2's submodules, peak memory, the sharing bound.

* :class:`StageTimer` adds up the seconds spent in SAM2's image encoder, memory attention, mask decoder (with the
  prompt encoder), memory encoder, and in frame loading (I/O: decode, resize, normalise), via forward hooks on the
  submodules and a wrapper around the loader. On CUDA each hook synchronises, so a timed run is slower than an
  untimed one: time the stages in a pass of their own there. Whatever is in no stage is SAM2's glue ("other").
  ``clock`` picks the time: wall-clock seconds (``time.perf_counter``, the default) or the process's CPU seconds
  (``time.process_time``), which other processes on a shared CPU barely change (with one torch thread, CPU time
  is the work done; with several, it also counts their waiting).
* :class:`PeakMemory`: the peak of ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident
  set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; a sampling thread where that is refused).
* :func:`sharing_bound`: the speed-up K configurations can get from sharing the image encoder and frame loading
  while every (object, configuration) row still does its own tracking work.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "io")
# SAM2Base attribute -> stage; the prompt encoder only embeds the mask prompt and is counted with the decoder
STAGE_MODULES = {"image_encoder": "image_encoder", "memory_attention": "memory_attention",
                 "sam_prompt_encoder": "mask_decoder", "sam_mask_decoder": "mask_decoder",
                 "memory_encoder": "memory_encoder"}
_STATUS = Path("/proc/self/status")


def _synchronize(device_type: str) -> None:
    if device_type == "cuda":
        import torch

        torch.cuda.synchronize()


class StageTimer:
    """Seconds per stage over everything ``model`` runs while attached (see the module docstring).

    ``io_targets`` are (object, attribute name) pairs whose callable is wrapped and counted as I/O, e.g.
    ``(engine, "_load_frame")`` or ``(sam2.sam2_video_predictor, "load_video_frames")``.
    """

    def __init__(self, model: Any, device_type: str, io_targets: list[tuple[Any, str]] = (),
                 clock: Callable[[], float] = time.perf_counter):
        self.model = model
        self.clock = clock
        self.device_type = device_type
        self.io_targets = list(io_targets)
        self.seconds = {stage: 0.0 for stage in STAGES}
        self.calls = {stage: 0 for stage in STAGES}
        self._started: dict[str, float] = {}
        self._handles: list[Any] = []
        self._saved: list[tuple[Any, str, Any, bool]] = []

    def _pre_hook(self, stage: str) -> Callable:
        def hook(module: Any, args: Any) -> None:
            _synchronize(self.device_type)
            self._started[stage] = self.clock()
        return hook

    def _post_hook(self, stage: str) -> Callable:
        def hook(module: Any, args: Any, output: Any) -> None:
            _synchronize(self.device_type)
            self.seconds[stage] += self.clock() - self._started.pop(stage)
            self.calls[stage] += 1
        return hook

    def _timed_io(self, function: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _synchronize(self.device_type)
            start = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                _synchronize(self.device_type)
                self.seconds["io"] += self.clock() - start
                self.calls["io"] += 1
        return wrapper

    def __enter__(self) -> "StageTimer":
        for attribute, stage in STAGE_MODULES.items():
            module = getattr(self.model, attribute, None)
            if module is not None:
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(stage)))
                self._handles.append(module.register_forward_hook(self._post_hook(stage)))
        for owner, name in self.io_targets:
            had_own = name in vars(owner)
            original = getattr(owner, name)
            self._saved.append((owner, name, vars(owner).get(name), had_own))
            setattr(owner, name, self._timed_io(original))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name, original, had_own in reversed(self._saved):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # an instance attribute shadowing a method: remove it
        self._saved.clear()

    def breakdown(self, total_seconds: float, frames: int) -> dict[str, float]:
        """Milliseconds per video frame for every stage, ``other`` (the rest of ``total_seconds``) and ``total``."""
        per_frame = {stage: round(1000 * self.seconds[stage] / frames, 2) for stage in STAGES}
        per_frame["other"] = round(1000 * (total_seconds - sum(self.seconds.values())) / frames, 2)
        per_frame["total"] = round(1000 * total_seconds / frames, 2)
        return per_frame


def sharing_bound(plain_one_run_ms: dict[str, float], k: int) -> float:
    """Speed-up over K plain runs when the image encoder and frame loading run once for all K configurations and
    everything else (memory attention, decoder, memory encoder, glue) runs once per row: the bound the per-stage
    breakdown of one plain run (ms per frame, :meth:`StageTimer.breakdown`) implies."""
    shared = plain_one_run_ms["image_encoder"] + plain_one_run_ms["io"]
    per_rows = plain_one_run_ms["total"] - shared
    return k * plain_one_run_ms["total"] / (shared + k * per_rows)


def _resident_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"{field} missing from {_STATUS}")
    return int(match.group(1)) * 1024


class PeakMemory:
    """Peak memory over a ``with`` block: GPU bytes allocated by torch on CUDA, the resident set on CPU.

    ``peak_bytes`` is the peak inside the block, ``baseline_bytes`` what was held as it began (so
    ``peak_bytes - baseline_bytes`` is what the block added); ``method`` says how it was measured.
    """

    def __init__(self, device_type: str, sample_seconds: float = 0.002):
        self.device_type = device_type
        self.sample_seconds = sample_seconds
        self.peak_bytes = 0
        self.baseline_bytes = 0
        self.method = ""
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _resident_bytes("VmRSS"))
            self._stop.wait(self.sample_seconds)

    def __enter__(self) -> "PeakMemory":
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.baseline_bytes = _resident_bytes("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
            self.method = "resident set peak (VmHWM)"
        except OSError:
            self.method = "resident set, sampled every 2 ms"
            self.peak_bytes = self.baseline_bytes
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = max(self.peak_bytes, _resident_bytes("VmRSS"))
        else:
            self.peak_bytes = _resident_bytes("VmHWM")

    def record(self) -> dict[str, Any]:
        """The figures as JSON-ready numbers (MiB)."""
        return {"peak_mib": round(self.peak_bytes / 2**20, 1),
                "added_mib": round((self.peak_bytes - self.baseline_bytes) / 2**20, 1), "method": self.method}
