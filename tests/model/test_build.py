"""Model configs and checkpoints: names, our yaml in plain SAM2, random checkpoints, clear loading errors."""
from __future__ import annotations

import pytest
import torch

from masseg_search.errors import MassegError
from masseg_search.model.build import (
    MODEL_CONFIGS_DIR,
    build_model,
    hydra_config_dir,
    init_checkpoint,
    load_state_dict_file,
    resolve_model_config,
)


def test_resolve_our_names_sam2_names_and_paths():
    assert resolve_model_config("tiny64") == (MODEL_CONFIGS_DIR / "tiny64.yaml").resolve()
    assert resolve_model_config(MODEL_CONFIGS_DIR / "tiny256.yaml").name == "tiny256.yaml"
    sam2_name = resolve_model_config("configs/sam2.1/sam2.1_hiera_b+.yaml")
    assert sam2_name.is_file() and sam2_name.parts[-3:] == ("configs", "sam2.1", "sam2.1_hiera_b+.yaml")
    assert resolve_model_config("sam2.1_hiera_t") == resolve_model_config("configs/sam2.1/sam2.1_hiera_t.yaml")
    with pytest.raises(MassegError, match="model config not found.*tiny64"):
        resolve_model_config("tiny65")


@pytest.mark.parametrize("name", ["tiny64", "tiny128", "tiny256"])
def test_our_configs_load_in_plain_sam2(name, tiny_checkpoint):
    """Users can take our yaml to sam2's own build_sam2_video_predictor (Hydra pointed at configs/models)."""
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    with hydra_config_dir(MODEL_CONFIGS_DIR):
        predictor = build_sam2_video_predictor(f"{name}.yaml", str(tiny_checkpoint) if name == "tiny64" else None,
                                               device="cpu", apply_postprocessing=False)
    assert isinstance(predictor, SAM2VideoPredictor) and predictor.image_size == int(name[4:])
    assert predictor.sam_image_embedding_size * 16 == predictor.image_size
    # sam2's own config names still resolve afterwards (its Hydra state is restored)
    build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")


def test_init_checkpoint_is_official_format_and_seeded(tmp_path):
    first = init_checkpoint("tiny64", tmp_path / "a.pt", seed=1)
    again = init_checkpoint("tiny64", tmp_path / "b.pt", seed=1)
    other = init_checkpoint("tiny64", tmp_path / "c.pt", seed=2)
    data = torch.load(first, weights_only=True)
    assert set(data) == {"model"}
    a, b, c = (load_state_dict_file(p) for p in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    model = build_model("tiny64", first)
    assert torch.equal(model.state_dict()["no_mem_embed"], a["no_mem_embed"])


def test_training_checkpoints_and_bare_state_dicts_load(tiny_checkpoint, tmp_path):
    state = load_state_dict_file(tiny_checkpoint)
    training = tmp_path / "checkpoint.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "loss": 0.5, "steps": {"train": 10}}, training)
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    for path in (training, bare):
        model = build_model("tiny64", path)
        assert torch.equal(model.state_dict()["no_mem_embed"], state["no_mem_embed"])


def test_checkpoint_errors_name_the_file_and_the_fix(tiny_checkpoint, tmp_path):
    with pytest.raises(MassegError, match="checkpoint not found"):
        load_state_dict_file(tmp_path / "nothing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(MassegError, match="corrupt or truncated") as error:
        load_state_dict_file(truncated)
    assert error.value.path == truncated
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MassegError, match="corrupt or truncated"):
        load_state_dict_file(garbage)
    no_model = tmp_path / "no_model.pt"
    torch.save({"weights": 1}, no_model)
    with pytest.raises(MassegError, match="no 'model' state dict"):
        load_state_dict_file(no_model)


def test_weights_of_another_config_say_which_config_they_fit(tiny_checkpoint):
    with pytest.raises(MassegError) as error:
        build_model("tiny128", tiny_checkpoint)
    message = str(error.value)
    assert "shape mismatches" in message and "maskmem_tpos_enc" in message
    assert "look like: tiny64" in message and "--model-config" in message


def test_checkpoint_with_objects_weights_only_refuses(tmp_path):
    import argparse

    path = tmp_path / "pickled.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(MassegError, match="argparse.Namespace object, which weights_only=True refuses"):
        load_state_dict_file(path)
