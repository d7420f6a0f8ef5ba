"""Clip statistics on clips with known properties; selection by thresholds, criteria and quotas; distributions."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from masseg_search.config import MosePlusSelection, StatRange
from masseg_search.data.layout import open_dataset, write_mask
from masseg_search.data.moseplus.select import (
    STATISTICS,
    clip_statistics,
    distribution_table,
    plot_distributions,
    select_clips,
    statistics_table,
)
from masseg_search.errors import MassegError

HEIGHT, WIDTH = 40, 50


def write_clip(root: Path, name: str, masks: list[np.ndarray], colours: dict[int, tuple[int, int, int]]) -> None:
    """A MOSE-layout clip whose frames paint each object in its colour over grey."""
    for t, mask in enumerate(masks):
        image = np.full((HEIGHT, WIDTH, 3), 60, dtype=np.uint8)
        for object_id, colour in colours.items():
            image[mask == object_id] = colour
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / name / f"{t:05d}.jpg"), image[:, :, ::-1])
        write_mask(root / "Annotations" / name / f"{t:05d}.png", mask)


def box(mask: np.ndarray, object_id: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask[y0:y1, x0:x1] = object_id
    return mask


@pytest.fixture(scope="module")
def known_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    empty = lambda: np.zeros((HEIGHT, WIDTH), dtype=np.uint8)  # noqa: E731
    # one big object, nothing happens
    write_clip(root, "plain", [box(empty(), 1, 5, 35, 5, 45) for _ in range(6)], {1: (200, 30, 30)})
    # object 2 leaves in frames 2-3 and comes back; object 1 stays
    reappear = [box(box(empty(), 1, 0, 10, 0, 10), 2, 20, 30, 20, 30) if t not in (2, 3) else box(empty(), 1, 0, 10, 0, 10)
                for t in range(6)]
    write_clip(root, "reappear", reappear, {1: (200, 30, 30), 2: (30, 30, 200)})
    # three small objects (4x4 = 16 px of 2000 = 0.8 %)
    write_clip(root, "small", [box(box(box(empty(), 1, 2, 6, 2, 6), 2, 20, 24, 20, 24), 3, 30, 34, 40, 44) for _ in range(4)],
               {1: (200, 30, 30), 2: (30, 200, 30), 3: (30, 30, 200)})
    # two look-alike objects (same colour), side by side
    write_clip(root, "lookalike", [box(box(empty(), 1, 5, 20, 5, 20), 2, 5, 20, 30, 45) for _ in range(4)],
               {1: (40, 160, 40), 2: (40, 160, 40)})
    # object 1 is 200 px, then partly hidden (40 px) in 5 of 10 frames: p10 area = 40
    shrink = [box(empty(), 1, 0, 10, 0, 20) if t < 5 else box(empty(), 1, 0, 2, 0, 20) for t in range(10)]
    write_clip(root, "shrink", shrink, {1: (200, 200, 30)})
    # two objects whose boxes overlap: object 2 is an L around object 1's corner
    overlap = empty()
    box(overlap, 1, 10, 20, 10, 20)
    box(overlap, 2, 15, 30, 20, 25)   # vertical bar, right of object 1
    box(overlap, 2, 25, 30, 15, 20)   # foot reaching under object 1: box of 2 = rows 15-30, cols 15-25
    write_clip(root, "overlap", [overlap.copy() for _ in range(3)], {1: (200, 30, 30), 2: (30, 30, 200)})
    return root


def stats_of(root: Path, name: str, **selection) -> dict[str, float]:
    return clip_statistics(open_dataset(root), name, MosePlusSelection(**selection))


def test_statistics_of_known_clips(known_clips: Path) -> None:
    plain = stats_of(known_clips, "plain")
    assert plain == {"num_objects": 1, "num_frames": 6, "area_drop": 0, "bbox_overlap": 0, "occlusion": 0,
                     "small_object_share": 0, "disappearance_share": 0, "reappearance_share": 0,
                     "appearance_similarity": 0}
    reappear = stats_of(known_clips, "reappear")
    assert (reappear["disappearance_share"], reappear["reappearance_share"]) == (0.5, 0.5)
    assert reappear["appearance_similarity"] < 0.2  # red vs blue
    small = stats_of(known_clips, "small")
    assert small["small_object_share"] == 1.0 and small["num_objects"] == 3
    assert stats_of(known_clips, "small", small_object_area=0.005)["small_object_share"] == 0.0
    assert stats_of(known_clips, "lookalike")["appearance_similarity"] > 0.95
    shrink = stats_of(known_clips, "shrink")
    assert shrink["area_drop"] == pytest.approx(1 - 40 / 200)
    assert shrink["occlusion"] == shrink["area_drop"]
    overlap = stats_of(known_clips, "overlap")
    # boxes: object 1 rows 10-20 x cols 10-20 (100 px); object 2 rows 15-30 x cols 15-25 (150 px); shared 5x5 = 25
    assert overlap["bbox_overlap"] == pytest.approx(25 / (100 + 150 - 25))


def test_frame_sampling_keeps_the_statistics_on_a_long_clip(known_clips: Path) -> None:
    sampled = stats_of(known_clips, "shrink", stats_max_frames=4)
    assert sampled["num_frames"] == 10 and sampled["area_drop"] == pytest.approx(0.8)


def test_statistics_table_is_cached(known_clips: Path, tmp_path: Path) -> None:
    cache = tmp_path / "stats.csv"
    dataset = open_dataset(known_clips)
    first = statistics_table(dataset, MosePlusSelection(), cache, progress=False)
    assert list(first.columns) == ["video", *STATISTICS] and len(first) == 6
    cached = pd.read_csv(cache)
    cached.loc[cached["video"] == "plain", "num_objects"] = 99  # a cached value is reused, not recomputed
    cached.to_csv(cache, index=False)
    again = statistics_table(dataset, MosePlusSelection(), cache, progress=False)
    assert again.set_index("video").loc["plain", "num_objects"] == 99


def candidate_table() -> pd.DataFrame:
    rows = []
    for source, count in (("a", 4), ("b", 3)):
        for index in range(count):
            values = {name: 0.0 for name in STATISTICS}
            values.update(num_objects=2.0 + index, num_frames=10.0, occlusion=0.1 * index, reappearance_share=0.5 * (index % 2))
            rows.append({"source": source, "video": f"{source}{index}", **values})
    rows[0]["num_frames"] = 2.0  # a0 fails the required length
    return pd.DataFrame(rows)


def test_selection_thresholds_criteria_and_quotas() -> None:
    selection = MosePlusSelection(
        required={"num_frames": StatRange(min=5)},
        criteria={"occlusion": StatRange(min=0.15), "reappearance_share": StatRange(min=0.5), "num_objects": StatRange(min=4)},
        min_criteria=1,
    )
    table = select_clips(candidate_table(), selection, quotas={"a": 2, "b": None}).set_index("video")
    # criteria met: a0 none; a1 = reappear (1); a2 = occlusion + objects (2); a3 = all three; b like a
    assert table["criteria_met"].to_dict() == {"a0": 0, "a1": 1, "a2": 2, "a3": 3, "b0": 0, "b1": 1, "b2": 2}
    assert table.loc["a0", "reason"] == "fails required"
    assert table.loc["b0", "reason"] == "too few criteria met"
    assert table.loc["a1", "reason"] == "over source quota"  # a3 and a2 rank higher
    assert sorted(table.index[table["selected"]]) == ["a2", "a3", "b1", "b2"]
    capped = select_clips(candidate_table(), selection.model_copy(update={"max_clips": 2}), quotas={"a": 2})
    assert set(capped.loc[capped["selected"], "video"]) == {"a2", "a3"}
    assert set(capped.loc[capped["reason"] == "over max_clips", "video"]) == {"b1", "b2"}


def test_selection_rejects_an_unknown_statistic() -> None:
    with pytest.raises(MassegError, match="unknown clip statistic 'occlusions'"):
        select_clips(candidate_table(), MosePlusSelection(criteria={"occlusions": StatRange(min=0.1)}))


def test_distribution_table_and_plot(tmp_path: Path) -> None:
    table = candidate_table()
    groups = {"before": table[table["source"] == "a"], "after": table}
    distributions = distribution_table(groups)
    row = distributions[(distributions["statistic"] == "num_objects") & (distributions["group"] == "after")].iloc[0]
    assert (row["clips"], row["mean"], row["median"]) == (7, pytest.approx(23 / 7), 3.0)  # a: 2..5, b: 2..4
    path = plot_distributions(groups, tmp_path / "report" / "distributions.png")
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
