"""Tests of rsseg-suggest-views: point visibility, greedy coverage, the CLI's output and its errors (tiny scenes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tyro

from nerfseg_plugin.core.scene_io import write_points
from nerfseg_plugin.planning.cli import SuggestViews, run
from nerfseg_plugin.planning.scene import load_planning_scene
from nerfseg_plugin.planning.selection import greedy_coverage, view_colour_histograms
from nerfseg_plugin.planning.visibility import VisibilityConfig, compute_visibility, visible_points
from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene, labeled_indices


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    config = SceneGenConfig(
        output=tmp_path_factory.mktemp("plan") / "grid",
        flight="grid",
        style="suburb",
        seed=5,
        num_views=16,
        width=48,
        height=48,
        num_points=4000,
        show_progress=False,
    )
    return generate_scene(config)


def suggest(scene: Path, capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI as the console script would; returns (exit status, stdout, stderr)."""
    try:
        run(tyro.cli(SuggestViews, args=["--data", str(scene), *args]))
        status = 0
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_visibility_keeps_points_in_view_in_front_and_unoccluded():
    # A nadir camera 100 m up at the origin, 100 x 100 px, focal 100 px: the image spans 100 m on the ground.
    c2w = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 100]])
    intrinsics = np.array([100.0, 100.0, 50.0, 50.0, 100.0, 100.0])
    ground = np.column_stack([np.random.default_rng(0).uniform(-45, 45, (300, 2)), np.zeros(300)])
    special = np.array(
        [
            [3.0, 3.0, 30.0],  # a roof point above the ground points near (3, 3): it hides them
            [80.0, 0.0, 0.0],  # outside the image
            [0.0, 0.0, 150.0],  # behind the camera
        ]
    )
    points = np.concatenate([ground, special])
    seen = set(visible_points(points, c2w, intrinsics, VisibilityConfig(points_per_cell=3.0)).tolist())
    roof, outside, behind = len(ground), len(ground) + 1, len(ground) + 2
    assert roof in seen and outside not in seen and behind not in seen
    # Cells are sqrt(100 * 100 * 3 / 301) ~ 10 px = 10 m: the ground points within a cell of the roof are hidden.
    cell = np.sqrt(100 * 100 * 3.0 / 301)
    roof_cell = np.floor((50 + 3.0 * 100 / 70) / cell)
    u, v = 50 + ground[:, 0], 50 - ground[:, 1]
    same_cell = (np.floor(u / cell) == roof_cell) & (np.floor(v / cell) == np.floor((50 - 3.0 * 100 / 70) / cell))
    assert same_cell.any()
    assert seen & set(range(len(ground))) == set(np.flatnonzero(~same_cell).tolist()), "level ground is all seen"


def test_greedy_property_and_coverage_bookkeeping(scene):
    planning = load_planning_scene(scene)
    visibility = compute_visibility(planning, VisibilityConfig())
    suggestion = greedy_coverage(visibility, 4)
    covered = np.zeros(visibility.num_points, dtype=bool)
    for view, new in zip(suggestion.views, suggestion.new_points, strict=True):
        gains = [int(np.count_nonzero(~covered[visibility.seen_by(v)])) for v in range(visibility.num_views)]
        others = [g for v, g in enumerate(gains) if v not in suggestion.views[: suggestion.views.index(view)]]
        assert new == gains[view] == max(others), "each step must take the largest new coverage"
        covered[visibility.seen_by(view)] = True
    assert suggestion.new_points == sorted(suggestion.new_points, reverse=True)  # submodular: gains shrink
    assert sum(suggestion.new_points) == np.count_nonzero(visibility.covered(suggestion.views))
    # With the appearance tie-breaker, each step stays within the tolerance of the best new coverage.
    histograms = view_colour_histograms(visibility, planning.colours)
    tolerant = greedy_coverage(visibility, 4, histograms, tie_tolerance=0.2)
    covered[:] = False
    for step, (view, new) in enumerate(zip(tolerant.views, tolerant.new_points, strict=True)):
        remaining = [v for v in range(visibility.num_views) if v not in tolerant.views[:step]]
        assert new >= 0.8 * max(int(np.count_nonzero(~covered[visibility.seen_by(v)])) for v in remaining)
        covered[visibility.seen_by(view)] = True


def test_suggestion_covers_more_than_evenly_spread_views(scene, capsys):
    status, out, _ = suggest(scene, capsys, "--num", "3", "--json")
    assert status == 0
    report = json.loads(out)
    planning = load_planning_scene(scene)
    visibility = compute_visibility(planning, VisibilityConfig())
    even = np.count_nonzero(visibility.covered(labeled_indices(16, 3))) / report["num_visible_points"]
    assert report["total_coverage"] >= even
    assert report["total_coverage"] > np.count_nonzero(visibility.covered([0, 1, 2])) / report["num_visible_points"]


def test_json_output_and_plain_output_agree(scene, capsys):
    status, out, _ = suggest(scene, capsys, "--num", "3", "--json")
    assert status == 0
    report = json.loads(out)
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    views = report["views"]
    assert len(views) == 3 and len({v["index"] for v in views}) == 3
    cumulative = 0.0
    for view in views:
        assert view["file_path"] == frames[view["index"]]["file_path"]
        assert (scene / view["file_path"]).is_file()
        cumulative += view["new_coverage"]
        assert view["cumulative_coverage"] == pytest.approx(cumulative)
    assert report["total_coverage"] == pytest.approx(cumulative) and 0.0 < cumulative <= 1.0
    assert report["num_views"] == 16 and report["num_points"] >= report["num_visible_points"] > 0
    status, plain, err = suggest(scene, capsys, "--num", "3")
    assert status == 0 and plain.splitlines() == [v["file_path"] for v in views]
    assert "cover" in err


def test_same_input_gives_the_same_suggestion(scene, capsys):
    outputs = {suggest(scene, capsys, "--num", "5", "--json")[1] for _ in range(2)}
    assert len(outputs) == 1


def test_keep_labeled_builds_on_the_labeled_frames(scene, capsys):
    status, out, _ = suggest(scene, capsys, "--num", "2", "--keep-labeled", "--json")
    assert status == 0
    report = json.loads(out)
    labeled = labeled_indices(16, 3)
    assert [v["index"] for v in report["fixed_views"]] == labeled
    assert not {v["index"] for v in report["views"]} & set(labeled)
    planning = load_planning_scene(scene)
    visibility = compute_visibility(planning, VisibilityConfig())
    chosen = labeled + [v["index"] for v in report["views"]]
    share = np.count_nonzero(visibility.covered(chosen)) / report["num_visible_points"]
    assert report["total_coverage"] == pytest.approx(share)


def _copy_scene(scene: Path, target: Path) -> Path:
    target.mkdir()
    (target / "transforms.json").write_text((scene / "transforms.json").read_text())
    (target / "sparse_pc.ply").write_bytes((scene / "sparse_pc.ply").read_bytes())
    return target


def _edit_transforms(folder: Path, edit) -> None:
    meta = json.loads((folder / "transforms.json").read_text())
    edit(meta)
    (folder / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "args", "message"),
    [
        ("no-folder", [], "scene folder does not exist"),
        ("no-transforms", [], "transforms.json is missing"),
        ("no-frames", [], "non-empty 'frames'"),
        ("no-ply-entry", [], "no 'ply_file_path'"),
        ("no-ply-file", [], "point cloud (ply_file_path in transforms.json) not found"),
        ("empty-ply", [], "point cloud has no points"),
        ("no-intrinsics", [], "has no intrinsics"),
        ("points-unseen", [], "is seen by any camera"),
        ("ok", ["--num", "0"], "--num must be in 1..16"),
        ("ok", ["--num", "17"], "--num must be in 1..16"),
    ],
)
def test_bad_input_exits_with_status_2_naming_file_and_problem(scene, tmp_path, capsys, damage, args, message):
    folder = tmp_path / "bad"
    if damage != "no-folder":
        _copy_scene(scene, folder)
    if damage == "no-transforms":
        (folder / "transforms.json").unlink()
    elif damage == "no-frames":
        _edit_transforms(folder, lambda meta: meta.update(frames=[]))
    elif damage == "no-ply-entry":
        _edit_transforms(folder, lambda meta: meta.pop("ply_file_path"))
    elif damage == "no-ply-file":
        (folder / "sparse_pc.ply").unlink()
    elif damage == "empty-ply":
        write_points(folder / "sparse_pc.ply", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    elif damage == "no-intrinsics":
        _edit_transforms(folder, lambda meta: meta.pop("fl_x"))
    elif damage == "points-unseen":  # all points above the cameras
        xyz = np.random.default_rng(0).uniform(-10, 10, (50, 3)).astype(np.float32) + np.float32([0, 0, 1000])
        write_points(folder / "sparse_pc.ply", xyz, np.zeros((50, 3), np.uint8))
    status, out, err = suggest(folder, capsys, *args)
    assert status == 2 and out == ""
    assert err.startswith("rsseg-suggest-views: ") and message in err
    assert str(folder) in err
