"""Scene typing: features on hand-built masks, the rule order, the table and its CSV."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from masseg_search.config import SceneTypesSection, load_config
from masseg_search.data.layout import open_dataset, read_mask, write_mask
from masseg_search.data.scene_types import FEATURES, check_rules, classify, load_scene_types, object_features, save_scene_types, scene_type_table
from masseg_search.errors import MassegError

GREY = (128, 128, 128)


def _image(height: int = 100, width: int = 100, color: tuple[int, int, int] = GREY) -> np.ndarray:
    return np.full((height, width, 3), color, np.uint8)


def test_single_object_features() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[10:20, 30:40] = 3  # 100 px of 10,000
    mask[0, 0] = 255  # void is not an object
    features = object_features(_image(), mask)
    assert list(features) == [3]
    values = features[3]
    assert values["area_fraction"] == pytest.approx(0.01)
    assert values["num_objects"] == 1 and values["neighbors"] == 0 and values["contact"] == 0
    assert values["nearest_distance"] == math.inf and values["color_similarity"] == 0
    assert values["clutter"] == 0  # flat background: no edges


def test_distance_neighbors_contact_and_colour() -> None:
    image = _image()
    mask = np.zeros((100, 100), np.uint8)
    mask[10:20, 10:20] = 1
    mask[10:20, 25:35] = 2  # 5 px gap from object 1 (diameter ~11.3)
    mask[20:30, 10:20] = 3  # touches object 1 along its bottom edge
    mask[80:90, 80:90] = 4  # far away
    image[mask == 1] = (200, 30, 30)
    image[mask == 2] = (202, 32, 28)  # nearly the same red
    image[mask == 3] = (30, 30, 200)
    image[mask == 4] = (30, 200, 30)
    features = object_features(image, mask)
    diameter = 2 * math.sqrt(100 / math.pi)
    assert features[1]["nearest_distance"] == 0  # touching object 3
    assert features[2]["nearest_distance"] == pytest.approx(5 / diameter, abs=0.02)
    assert features[1]["neighbors"] == 2 and features[4]["neighbors"] == 0
    assert features[1]["contact"] == pytest.approx(10 / 36, abs=0.01)  # bottom row of its 36 boundary pixels
    assert features[4]["contact"] == 0
    assert features[1]["color_similarity"] > 0.85 and features[2]["color_similarity"] > 0.85
    assert features[3]["color_similarity"] < 0.2 and features[4]["color_similarity"] < 0.2
    assert all(f["num_objects"] == 4 for f in features.values())


def test_compactness_and_background_similarity() -> None:
    """A disc is compact, a thin bar is not; an object coloured like its surroundings is camouflaged."""
    import cv2

    image = _image()
    mask = np.zeros((100, 100), np.uint8)
    cv2.circle(mask, (30, 30), 12, 1, -1)
    mask[80:82, 10:90] = 2
    image[mask == 1] = (200, 50, 50)  # red on grey
    image[mask == 2] = (130, 128, 128)  # nearly the grey background
    features = object_features(image, mask)
    assert features[1]["compactness"] > 0.85 and features[2]["compactness"] < 0.15
    assert features[1]["background_similarity"] < 0.1 and features[2]["background_similarity"] > 0.9
    single = np.zeros((100, 100), np.uint8)
    single[50, 50] = 1  # one pixel: no perimeter to divide by
    assert object_features(_image(), single)[1]["compactness"] == 1.0


def test_clutter_rises_with_background_texture() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 40:60] = 1
    plain = _image()
    striped = _image()
    striped[:, (np.arange(100) // 5) % 2 == 1] = 20  # vertical stripes 5 px wide: an edge every 5 columns
    assert object_features(plain, mask)[1]["clutter"] == 0
    assert object_features(striped, mask)[1]["clutter"] > 0.15


def test_size_mismatch_is_an_error() -> None:
    with pytest.raises(MassegError, match="resize"):
        object_features(_image(50, 50), np.zeros((40, 50), np.uint8))


def test_rules_first_match_wins_bounds_inclusive_default() -> None:
    section = SceneTypesSection.model_validate(
        {
            "default": "regular",
            "types": [
                {"name": "small", "when": {"area_fraction": {"max": 0.005}}},
                {"name": "crowded", "when": {"num_objects": {"min": 5}}},
                {"name": "lookalike", "when": {"color_similarity": {"min": 0.75}, "num_objects": {"max": 4}}},
            ],
        }
    )
    base = dict.fromkeys(FEATURES, 0.0) | {"area_fraction": 0.05, "num_objects": 2.0}
    assert classify(base, section) == "regular"
    assert classify(base | {"area_fraction": 0.005}, section) == "small"  # inclusive
    assert classify(base | {"area_fraction": 0.001, "num_objects": 8}, section) == "small"  # first match wins
    assert classify(base | {"num_objects": 5}, section) == "crowded"
    assert classify(base | {"color_similarity": 0.75}, section) == "lookalike"
    assert classify(base | {"color_similarity": 0.9, "num_objects": 5}, section) == "crowded"
    assert classify(base | {"area_fraction": math.nan}, section) == "regular"  # NaN matches no range


def test_unknown_feature_names_the_closest() -> None:
    section = SceneTypesSection.model_validate({"types": [{"name": "tiny", "when": {"area_fractoin": {"max": 0.01}}}]})
    with pytest.raises(MassegError, match="area_fraction"):
        check_rules(section, "my.yaml")


def test_table_on_synthetic_data_is_stable_and_round_trips(tiny_dataset: Path, tmp_path: Path) -> None:
    section = load_config().scene_types
    table = scene_type_table(open_dataset(tiny_dataset), section)
    again = scene_type_table(tiny_dataset, section, workers=2)
    pd.testing.assert_frame_equal(table, again)
    assert list(table.columns[:4]) == ["video", "object_id", "scene_type", "first_frame"]
    assert set(FEATURES) <= set(table.columns)
    # one row per first-frame object
    expected = sum(len(set(np.unique(read_mask(v.annotation_paths()[0]))) - {0}) for v in open_dataset(tiny_dataset).videos())
    assert len(table) == expected
    assert len(set(table["scene_type"])) >= 2  # the synthetic set has several types
    path = save_scene_types(table, tmp_path / "types.csv")
    pd.testing.assert_frame_equal(load_scene_types(path), table)


def test_features_use_only_the_first_annotated_frame(dataset_copy_for_types: Path) -> None:
    section = load_config().scene_types
    before = scene_type_table(dataset_copy_for_types, section)
    video = open_dataset(dataset_copy_for_types).video("video_0000")
    for path in video.annotation_paths()[1:]:  # later frames change completely
        write_mask(path, np.zeros_like(read_mask(path)))
    pd.testing.assert_frame_equal(scene_type_table(dataset_copy_for_types, section), before)


def test_video_names_stay_strings_and_missing_columns_fail(tmp_path: Path) -> None:
    table = pd.DataFrame({"video": ["0001"], "object_id": [1], "scene_type": ["small"], "nearest_distance": [math.inf]})
    loaded = load_scene_types(save_scene_types(table, tmp_path / "t.csv"))
    assert loaded["video"].tolist() == ["0001"] and loaded["nearest_distance"].tolist() == [math.inf]
    (tmp_path / "bad.csv").write_text("video,type\na,b\n")
    with pytest.raises(MassegError, match="lacks columns"):
        load_scene_types(tmp_path / "bad.csv")
    with pytest.raises(MassegError, match="not found"):
        load_scene_types(tmp_path / "none.csv")


@pytest.fixture
def dataset_copy_for_types(tiny_dataset: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    return root
