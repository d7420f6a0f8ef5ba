"""Building SAM2 from a Hydra model config and a checkpoint, with errors that name the file and the fix.

Model configs are SAM2-format Hydra yaml files: our names (``tiny64``, ``tiny128``, ``tiny256`` under
``configs/models/``), sam2's shipped names (``configs/sam2.1/sam2.1_hiera_b+.yaml``) or any path. Every config is
composed by real Hydra from its own folder (:func:`hydra_config_dir`), and the model is built by sam2's own
``build_sam2_video_predictor``, so what runs here is exactly what plain SAM2 builds. To take one of our yaml files
to plain SAM2::

    from sam2.build_sam import build_sam2_video_predictor
    from masseg_search.model.build import hydra_config_dir
    with hydra_config_dir("configs/models"):
        predictor = build_sam2_video_predictor("tiny256.yaml", "ckpt.pt", device="cpu")

(without this package: ``GlobalHydra.instance().clear()`` then ``hydra.initialize_config_dir(<abs dir>)``; or copy
the yaml under ``site-packages/sam2/configs/`` and pass its relative name, e.g. to ``tools/vos_inference.py``).

Checkpoints: official ``{"model": state_dict}`` files and sam2-trainer checkpoints (``{"model", "optimizer",
"epoch", ...}``), opened only by :func:`read_checkpoint` (``weights_only=True``; every failure a MassegError naming
the file) and loaded by :func:`apply_state_dict` (wrong keys or shapes named).
"""
from __future__ import annotations

import importlib.util
import io
import logging
import pickle
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from masseg_search import CONFIGS_DIR
from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError

logger = logging.getLogger(__name__)

MODEL_CONFIGS_DIR = CONFIGS_DIR / "models"
# vos_inference.py's override for DAVIS-style (one PNG per frame) outputs: overlapping objects are resolved.
NON_OVERLAP_OVERRIDE = "++model.non_overlap_masks=true"


def sam2_package_dir() -> Path:
    """The installed ``sam2`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("sam2")
    if spec is None or not spec.submodule_search_locations:
        raise MassegError("the sam2 package is not installed", fix="pip install sam2==1.1.0")
    return Path(list(spec.submodule_search_locations)[0])


def available_model_configs() -> list[str]:
    """Our config names and sam2's shipped config names."""
    ours = sorted(p.stem for p in MODEL_CONFIGS_DIR.glob("*.yaml"))
    package = sam2_package_dir()
    theirs = sorted(str(p.relative_to(package)) for p in (package / "configs").glob("sam2*/*.yaml") if "training" not in p.parent.name)
    return ours + theirs


def resolve_model_config(name_or_path: str | Path) -> Path:
    """A yaml path for one of our names (``tiny64``), a sam2 name (``configs/sam2.1/sam2.1_hiera_b+.yaml``,
    also ``sam2.1_hiera_b+``) or a path to any SAM2-format yaml file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    package = sam2_package_dir()
    stem = text[:-5] if text.endswith(".yaml") else text
    candidates = [MODEL_CONFIGS_DIR / f"{stem}.yaml", package / text, package / f"{stem}.yaml",
                  *sorted((package / "configs").glob(f"sam2*/{Path(stem).name}.yaml"))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise MassegError("model config not found", text, f"pass a yaml path or one of: {', '.join(available_model_configs())}")


@contextmanager
def hydra_config_dir(config_dir: str | Path) -> Iterator[None]:
    """Let Hydra (and so sam2's ``build_sam2*`` functions) resolve config names inside ``config_dir``.

    sam2 initialises Hydra on import for its own package configs; this swaps that for ``config_dir`` and puts it
    back afterwards.
    """
    import sam2  # noqa: F401  (its import initialises Hydra; we restore that state on exit)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.2"):
            yield
    finally:
        restore_gh_from_backup(backup)


def compose_model_config(model_config: str | Path, overrides: list[str] | None = None) -> Any:
    """The composed (resolved) Hydra config of a model yaml, as an OmegaConf DictConfig."""
    from hydra import compose
    from omegaconf import OmegaConf

    path = resolve_model_config(model_config)
    try:
        with hydra_config_dir(path.parent):
            config = compose(config_name=path.name, overrides=list(overrides or []))
    except Exception as exc:  # hydra raises many types; all mean the yaml cannot be composed
        raise MassegError(f"cannot compose the model config ({exc})", path, "fix the yaml (compare with sam2's configs/sam2.1/*.yaml)") from None
    OmegaConf.resolve(config)
    if "model" not in config:
        raise MassegError("no 'model' section", path, "a SAM2 model yaml starts with '# @package _global_' and a 'model:' mapping")
    return config


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MassegError("--device cuda asked for, but torch sees no GPU", fix="use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise MassegError(f"unknown device {device!r}", fix="use auto, cpu or cuda")
    return device


def _build_predictor(path: Path, device: str, postprocess: bool, extra_overrides: list[str]) -> Any:
    from sam2.build_sam import build_sam2_video_predictor

    try:
        with hydra_config_dir(path.parent):
            return build_sam2_video_predictor(path.name, None, device=device, mode="eval", apply_postprocessing=postprocess,
                                              hydra_overrides_extra=[NON_OVERLAP_OVERRIDE, *extra_overrides])
    except MassegError:
        raise
    except Exception as exc:  # hydra/instantiate errors: the yaml does not describe a buildable SAM2
        raise MassegError(f"cannot build SAM2 from this config ({type(exc).__name__}: {exc})", path,
                          "check the tiny-config rules in configs/models/tiny64.yaml's header") from None


def build_model(model_config: str | Path, checkpoint: str | Path | None = None, device: str = "cpu",
                postprocess: bool = False, overrides: list[str] | None = None) -> Any:
    """A ``SAM2VideoPredictor`` (a ``SAM2Base``) in eval mode, built as SAM2's ``tools/vos_inference.py`` builds it:
    ``build_sam2_video_predictor(config, apply_postprocessing=postprocess)`` plus ``non_overlap_masks=true``.

    ``checkpoint`` None = random weights. ``overrides`` are extra Hydra overrides (``++model.key=value``).
    """
    path = resolve_model_config(model_config)
    state_dict = load_state_dict_file(checkpoint) if checkpoint is not None else None  # a bad file fails before the build
    model = _build_predictor(path, resolve_device(device), postprocess, list(overrides or []))
    if state_dict is not None:
        apply_state_dict(model, state_dict, checkpoint, model_config=path)
    return model


def read_checkpoint(path: str | Path) -> Any:
    """The object a checkpoint file holds, read with ``torch.load(weights_only=True)`` on the CPU.

    The one place a checkpoint is opened: every way the read can fail (missing, a folder, empty, truncated, not a
    zip or pickle at all, e.g. a text file, or a pickle of objects ``weights_only`` refuses) becomes one
    MassegError naming the file.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise MassegError("checkpoint not found", path, "pass an existing .pt file, or create one with `masseg-search model init`")
    if not path.is_file():
        raise MassegError("checkpoint is a folder, not a file", path, "pass the .pt file inside it")
    if path.stat().st_size == 0:
        raise MassegError("checkpoint file is empty", path, "re-download or re-save the checkpoint")
    try:
        with warnings.catch_warnings():  # a plain pickle makes torch warn about its protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise MassegError(f"checkpoint holds a {refused.group(1)} object, which weights_only=True refuses", path,
                              "save it as {'model': model.state_dict()} with plain tensors and numbers") from None
        raise MassegError("cannot read checkpoint: not a torch.save file, or corrupt or truncated (a pickle that "
                          "torch's weights-only reader cannot parse)", path,
                          "re-download or re-save the checkpoint (a .pt file written by torch.save)") from None
    except Exception as exc:  # noqa: BLE001  torch's readers raise KeyError, RuntimeError, EOFError... for bad bytes
        detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else ""
        raise MassegError(f"cannot read checkpoint: not a torch.save file, or corrupt or truncated "
                          f"({type(exc).__name__}{': ' + detail if detail else ''})", path,
                          "re-download or re-save the checkpoint (a .pt file written by torch.save)") from None


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """The model state dict of an official ``{"model": ...}`` or a training checkpoint (``weights_only=True``)."""
    import torch

    path = Path(path)
    data = read_checkpoint(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        state_dict = data["model"]
    elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        state_dict = data  # a bare state dict
    else:
        keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise MassegError(f"no 'model' state dict in checkpoint (found {keys})", path,
                          "use an official SAM2 checkpoint ({'model': state_dict}) or one written by train / model init")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MassegError(f"checkpoint 'model' entries are not tensors: {bad[:5]}", path, "save model.state_dict()")
    return state_dict


def _signature_of_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Architecture numbers readable from weights: trunk embed_dim and depth, neck d_model, memory dim."""
    blocks = {k.split(".")[3] for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
    signature = {"trunk_blocks": len(blocks)}
    for name, key, axis in (("trunk_embed_dim", "image_encoder.trunk.patch_embed.proj.weight", 0),
                            ("d_model", "image_encoder.neck.convs.0.conv.weight", 0),
                            ("memory_dim", "memory_encoder.out_proj.weight", 0)):
        if key in state_dict:
            signature[name] = int(state_dict[key].shape[axis])
    signature["sam2.1"] = "no_obj_embed_spatial" in state_dict
    return signature


def _signature_of_config(path: Path) -> dict[str, Any] | None:
    """The same numbers read from a model yaml (plain YAML read, no Hydra), or None if it is not one."""
    import yaml

    try:
        model = (yaml.safe_load(path.read_text()) or {}).get("model", {})
        trunk = model["image_encoder"]["trunk"]
        return {"trunk_blocks": int(sum(trunk.get("stages", (2, 3, 16, 3)))),
                "trunk_embed_dim": int(trunk.get("embed_dim", 96)),
                "d_model": int(model["image_encoder"]["neck"]["d_model"]),
                "memory_dim": int(model["memory_encoder"].get("out_dim", model["image_encoder"]["neck"]["d_model"])),
                "sam2.1": bool(model.get("no_obj_embed_spatial", False)),
                "image_size": model.get("image_size")}
    except (yaml.YAMLError, KeyError, TypeError, ValueError, OSError):
        return None


def guess_configs(state_dict: dict[str, Any]) -> list[str]:
    """Config names (ours and sam2's) whose architecture matches these weights."""
    found = _signature_of_state_dict(state_dict)
    package = sam2_package_dir()
    matches = []
    for name in available_model_configs():
        path = MODEL_CONFIGS_DIR / f"{name}.yaml" if "/" not in name else package / name
        expected = _signature_of_config(path)
        if expected and all(expected.get(k) == v for k, v in found.items()):
            size = f" ({expected['image_size']} px)" if expected.get("image_size") else ""
            matches.append(name + size)
    return matches


def apply_state_dict(model: Any, state_dict: dict[str, Any], checkpoint: str | Path,
                     model_config: str | Path | None = None) -> None:
    """Load ``state_dict`` (read from ``checkpoint``) into ``model`` strictly; wrong keys or shapes name the first
    differing ones, the file, and the configs these weights look like."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong_shape:
        lines = []
        if wrong_shape:
            lines.append("shape mismatches: " + ", ".join(
                f"{k} checkpoint {tuple(state_dict[k].shape)} vs config {tuple(expected[k].shape)}" for k in wrong_shape[:3]))
        if missing:
            lines.append(f"{len(missing)} keys missing from the checkpoint, e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
        looks_like = guess_configs(state_dict)
        guess = f"the weights look like: {', '.join(looks_like)}" if looks_like else "they match none of our or sam2's configs"
        config_text = f" config {model_config}" if model_config else " config"
        raise MassegError(f"weights do not fit the{config_text}: {'; '.join(lines)}; {guess}", checkpoint,
                          "pass the --model-config the checkpoint was trained with")
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a dtype torch cannot copy into a parameter
        raise MassegError(f"cannot load the weights ({type(exc).__name__}: {str(exc).splitlines()[0]})", checkpoint,
                          "re-save the checkpoint from a model built with the same config") from None


def load_weights(model: Any, checkpoint: str | Path, model_config: str | Path | None = None) -> None:
    """Load a checkpoint file into ``model`` strictly (:func:`read_checkpoint`, then :func:`apply_state_dict`)."""
    apply_state_dict(model, load_state_dict_file(checkpoint), checkpoint, model_config)


def init_checkpoint(model_config: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised model (seeded) as an official-format ``{"model": state_dict}`` checkpoint."""
    import torch

    path = resolve_model_config(model_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_predictor(path, "cpu", False, [])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict()}, buffer)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    logger.info("wrote random %s weights (seed %d, %d parameters) to %s", path.stem, seed,
                sum(p.numel() for p in model.parameters()), out)
    return out


def build_plain_predictor(model_config: str | Path, checkpoint: str | Path | None, device: str = "cpu",
                          postprocess: bool = False) -> Any:
    """Plain SAM2, exactly as ``tools/vos_inference.py`` builds it (sam2 loads the checkpoint itself): the
    reference the engine is checked against."""
    from sam2.build_sam import build_sam2_video_predictor

    path = resolve_model_config(model_config)
    if checkpoint:
        load_state_dict_file(checkpoint)  # sam2's own loader would print a raw traceback for a bad file
    with hydra_config_dir(path.parent):
        return build_sam2_video_predictor(path.name, str(checkpoint) if checkpoint else None, device=device,
                                          apply_postprocessing=postprocess, hydra_overrides_extra=[NON_OVERLAP_OVERRIDE])


def export_checkpoint(checkpoint: str | Path, out: str | Path, model_config: str | Path | None = None) -> Path:
    """Strip a training checkpoint to the official ``{"model": state_dict}`` format (no optimizer state).

    With ``model_config`` the weights are first loaded into that config, so a mismatch is caught before writing.
    """
    import torch

    if model_config is not None:
        build_model(model_config, checkpoint, device="cpu")  # raises on weights that do not fit
    buffer = io.BytesIO()
    torch.save({"model": load_state_dict_file(checkpoint)}, buffer)
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out
