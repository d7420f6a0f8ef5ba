"""A configuration: the memory encoder's sigmoid (scale, bias) plus SAM2's inference-time memory knobs and our
memory admission policy, each at "the model's own value" unless set. No torch here.

Config ids stay ``s<scale>_b<bias>`` when every other knob is at its default; a knob that is set adds a short
field, always in this order (``%g`` numbers)::

    st  memory_stride   SAM2 ``memory_temporal_stride_for_eval`` (r: memory frames taken every r-th frame)
    mf  memory_frames   SAM2 ``num_maskmem`` at inference (1 conditioning + mf-1 recent frames read; <= trained)
    op  obj_ptrs        SAM2 ``max_obj_ptrs_in_encoder`` (object pointers read, >= 2)
    cf  cond_frames     SAM2 ``max_cond_frames_in_attn`` (-1 = all; >= 2; only matters with several prompts)
    mm  multimask       SAM2 ``multimask_output_for_tracking`` (0 / 1)
    as  admit_score     ours: a frame enters a row's memory only if its object-score logit > as
    ai  admit_iou       ours: ... and its predicted IoU > ai
    kp  keep_present    ours: up to kp memory slots hold the last frames where the object was confidently present

e.g. ``s7.5_b-4_st2_mf4``, ``s20_b-10_as0_ai0.5``; a view still follows as ``@view``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from masseg_search.errors import MassegError

# field name -> (id prefix, type); the order is the id's order
KNOB_FIELDS: dict[str, tuple[str, type]] = {
    "memory_stride": ("st", int),
    "memory_frames": ("mf", int),
    "obj_ptrs": ("op", int),
    "cond_frames": ("cf", int),
    "multimask": ("mm", int),
    "admit_score": ("as", float),
    "admit_iou": ("ai", float),
    "keep_present": ("kp", int),
}
_PREFIX_TO_FIELD = {prefix: name for name, (prefix, _) in KNOB_FIELDS.items()}
_VIEW = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
CONFIG_ID = re.compile(rf"^s(?P<scale>[-+0-9.eE]+)_b(?P<bias>[-+0-9.eE]+)(?P<knobs>(_({'|'.join(_PREFIX_TO_FIELD)})[-+0-9.eE]+)*)"
                       rf"(@(?P<view>{_VIEW}))?$")
_KNOB_PART = re.compile(rf"_({'|'.join(_PREFIX_TO_FIELD)})([-+0-9.eE]+)")
ID_HELP = "use s<scale>_b<bias>[_st<r>][_mf<n>][_op<n>][_cf<n>][_mm<0|1>][_as<x>][_ai<x>][_kp<n>][@<view>], e.g. s7.5_b-4_st2_mf4"


@dataclass(frozen=True)
class Knobs:
    """One configuration; None = the model's own value (SAM2 knobs) or off (admission policy)."""

    scale: float
    bias: float
    memory_stride: int | None = None
    memory_frames: int | None = None
    obj_ptrs: int | None = None
    cond_frames: int | None = None
    multimask: int | None = None
    admit_score: float | None = None
    admit_iou: float | None = None
    keep_present: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "bias", float(self.bias))
        for name, (_, kind) in KNOB_FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, kind(value))
        problems = []
        if self.memory_stride is not None and self.memory_stride < 1:
            problems.append("memory_stride must be >= 1")
        if self.memory_frames is not None and self.memory_frames < 1:
            problems.append("memory_frames must be >= 1")
        if self.obj_ptrs is not None and self.obj_ptrs < 2:
            problems.append("obj_ptrs must be >= 2 (SAM2 divides by obj_ptrs - 1)")
        if self.cond_frames is not None and not (self.cond_frames == -1 or self.cond_frames >= 2):
            problems.append("cond_frames must be -1 or >= 2 (as SAM2's max_cond_frames_in_attn)")
        if self.multimask is not None and self.multimask not in (0, 1):
            problems.append("multimask must be 0 or 1")
        if self.keep_present is not None and self.keep_present < 0:
            problems.append("keep_present must be >= 0")
        if problems:
            raise MassegError(f"bad configuration {self!r}: {'; '.join(problems)}", fix=ID_HELP)

    @property
    def pair(self) -> tuple[float, float]:
        """(scale, bias)."""
        return self.scale, self.bias

    @property
    def admission(self) -> bool:
        """Whether the admission policy is on (a threshold is set)."""
        return self.admit_score is not None or self.admit_iou is not None

    def extras(self) -> dict[str, Any]:
        """The knobs set besides scale and bias (field -> value)."""
        return {name: getattr(self, name) for name in KNOB_FIELDS if getattr(self, name) is not None}

    def as_dict(self) -> dict[str, Any]:
        """scale, bias and the knobs that are set: what best_configs.yaml stores."""
        return {"scale": self.scale, "bias": self.bias, **self.extras()}

    def with_pair(self, scale: float, bias: float) -> "Knobs":
        return replace(self, scale=scale, bias=bias)


def as_knobs(config: Any) -> Knobs:
    """A Knobs from a Knobs, a (scale, bias) pair, a mapping with scale/bias/knob fields, or a config id."""
    if isinstance(config, Knobs):
        return config
    if isinstance(config, str):
        return parse_knobs_id(config)[0]
    if isinstance(config, dict):
        unknown = set(config) - {f.name for f in fields(Knobs)}
        if unknown:
            raise MassegError(f"unknown configuration fields {sorted(unknown)}",
                              fix=f"use scale, bias and {', '.join(KNOB_FIELDS)}")
        return Knobs(**config)
    scale, bias = config
    return Knobs(scale, bias)


def _g(value: float) -> str:
    return f"{float(value):g}"


def knobs_id(knobs: Knobs, view: str | None = None) -> str:
    """The readable id: ``s7.5_b-4`` at default knobs, ``s7.5_b-4_st2_mf4`` otherwise, ``...@view`` with a view."""
    parts = [f"s{_g(knobs.scale)}_b{_g(knobs.bias)}"]
    parts += [f"_{KNOB_FIELDS[name][0]}{_g(value)}" for name, value in knobs.extras().items()]
    base = "".join(parts)
    return base if not view else f"{base}@{view}"


def parse_knobs_id(text: str) -> tuple[Knobs, str | None]:
    """(Knobs, view or None) from a config id; a clear error for anything else."""
    match = CONFIG_ID.match(text)
    if not match:
        raise MassegError(f"{text!r} is not a config id", fix=ID_HELP)
    values: dict[str, Any] = {}
    for prefix, number in _KNOB_PART.findall(match["knobs"] or ""):
        name = _PREFIX_TO_FIELD[prefix]
        if name in values:
            raise MassegError(f"{text!r} gives {prefix} twice", fix=ID_HELP)
        try:
            values[name] = KNOB_FIELDS[name][1](float(number))
        except ValueError:
            raise MassegError(f"{text!r}: {prefix}{number} is not a number", fix=ID_HELP) from None
    try:
        knobs = Knobs(float(match["scale"]), float(match["bias"]), **values)
    except ValueError:
        raise MassegError(f"{text!r}: scale or bias is not a number", fix=ID_HELP) from None
    return knobs, match["view"]


def knobs_from_entry(entry: Any, where: str, source: Any = None) -> Knobs:
    """A configuration as YAML writes it (``{scale, bias}`` and any knob fields, best_configs.yaml and policy.yaml);
    errors name ``where`` in ``source``."""
    try:
        knobs = {name: entry[name] for name in KNOB_FIELDS if entry.get(name) is not None}
        return Knobs(float(entry["scale"]), float(entry["bias"]), **knobs)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise MassegError(f"{where} needs numeric 'scale' and 'bias' (and numeric memory knobs, if any)", source,
                          "write e.g. {scale: 7.5, bias: -4.0} or {scale: 7.5, bias: -4.0, memory_stride: 2}") from None
    except MassegError as exc:
        raise MassegError(f"{where}: {exc.message}", source, exc.fix) from None
