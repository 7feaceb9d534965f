"""Tests of the synthetic aerial scene generator (tiny scenes, a few seconds in all)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.scenegen.cli import main as cli_main
from nerfseg_plugin.scenegen.generator import SceneGenConfig, generate_scene, labeled_indices
from nerfseg_plugin.scenegen.materials import SCENE_LABEL_SPACE

STYLES = ("downtown", "suburb", "riverside", "industrial")


def tiny_config(output: Path, **overrides) -> SceneGenConfig:
    settings = dict(output=output, num_views=8, width=64, height=64, save_depth=True, show_progress=False)
    settings.update(overrides)
    return SceneGenConfig(**settings)


@pytest.fixture(scope="module")
def style_scenes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("styles")
    return {style: generate_scene(tiny_config(root / style, style=style, seed=3)) for style in STYLES}


@pytest.fixture(scope="module")
def scene(style_scenes) -> Path:
    return style_scenes["downtown"]


def load_frames(scene: Path) -> list[dict]:
    return json.loads((scene / "transforms.json").read_text())["frames"]


def label_path(frame: dict) -> str:
    return frame.get("semantic_path") or frame["semantic_eval_path"]


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert [line for line in header if line.startswith("property")] == [
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
    ]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    vertex = np.frombuffer(data[end:], dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    assert len(vertex) == count
    return vertex["xyz"], vertex["rgb"]


def scene_files(scene: Path) -> dict[str, bytes]:
    return {str(p.relative_to(scene)): p.read_bytes() for p in sorted(scene.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path, scene):
    again = generate_scene(tiny_config(tmp_path / "again", style="downtown", seed=3))
    assert scene_files(again) == scene_files(scene)
    other = generate_scene(tiny_config(tmp_path / "other", style="downtown", seed=4))
    first_image = "images/frame_00000.png"
    assert scene_files(other)[first_image] != scene_files(scene)[first_image]
    assert (other / "transforms.json").read_text() != (scene / "transforms.json").read_text()


def test_scene_follows_the_format(scene):
    meta = json.loads((scene / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (64, 64)
    assert all(meta[k] == 0.0 for k in ("k1", "k2", "p1", "p2"))
    assert meta["ply_file_path"] == "sparse_pc.ply" and (scene / "sparse_pc.ply").is_file()
    assert not any(key.endswith("_filenames") for key in meta)
    space = LabelSpace.load(scene / "classes.json")
    assert space.names == SCENE_LABEL_SPACE.names and space.ignore_index == 255
    frames = meta["frames"]
    assert len(frames) == 8
    for frame in frames:
        assert ("semantic_path" in frame) != ("semantic_eval_path" in frame)
        image = Image.open(scene / frame["file_path"])
        assert image.mode == "RGB" and image.size == (64, 64)
        labels = Image.open(scene / label_path(frame))
        assert labels.mode == "L" and labels.size == image.size
        values = np.unique(np.asarray(labels))
        assert np.all((values < space.num_classes) | (values == 255)), values
        assert (scene / "depth" / (Path(frame["file_path"]).stem + ".npy")).is_file()


def test_labeled_views_are_exactly_k_and_spread_along_the_path(tmp_path):
    scene = generate_scene(tiny_config(tmp_path / "k", num_views=12, width=32, height=32, num_labeled=4))
    frames = load_frames(scene)
    labeled = [i for i, f in enumerate(frames) if "semantic_path" in f]
    assert labeled == labeled_indices(12, 4) == [1, 4, 7, 10]
    assert sum("semantic_eval_path" in f for f in frames) == 8
    gaps = np.diff(labeled + [labeled[0] + 12])  # the orbit is closed
    assert gaps.max() - gaps.min() <= 1
    for frame in frames:  # every view has a label map, training or evaluation
        assert (scene / label_path(frame)).is_file()


def test_cameras_are_orthonormal_and_look_down(style_scenes):
    for scene in style_scenes.values():
        for frame in load_frames(scene):
            c2w = np.array(frame["transform_matrix"])
            assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
            rotation = c2w[:3, :3]
            assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
            assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
            viewing = -rotation[:, 2]
            assert viewing[2] < -0.5, "the camera's -z axis must point down at the town"
            assert c2w[2, 3] > 50.0


def test_lawnmower_flight_non_square_images_and_sky(tmp_path):
    scene = generate_scene(
        tiny_config(tmp_path / "mower", flight="lawnmower", width=48, height=32, jitter=0.0, tilt_deg=60.0, fov_deg=100)
    )
    meta = json.loads((scene / "transforms.json").read_text())
    assert (meta["w"], meta["h"], meta["cx"], meta["cy"]) == (48, 32, 24.0, 16.0)
    positions = np.array([np.array(f["transform_matrix"])[:3, 3] for f in meta["frames"]])
    assert len(positions) == 8 and np.allclose(positions[:, 2], positions[0, 2])  # no jitter: constant altitude
    assert np.all(np.linalg.norm(np.diff(positions[:, :2], axis=0), axis=1) > 1.0)
    # Tilted 60 degrees with a 100 degree field of view, the top rows see the sky: ignore label, infinite depth.
    labels = np.asarray(Image.open(scene / label_path(meta["frames"][0])))
    depth = np.load(scene / "depth" / "frame_00000.npy")
    assert labels.shape == (32, 48) and np.all(labels[0] == 255) and np.all(np.isinf(depth[0]))
    assert np.all(labels[-1] != 255) and np.all(np.isfinite(depth[-1]))


def _backproject(c2w, meta, rows, cols, depth):
    x = (cols + 0.5 - meta["cx"]) / meta["fl_x"] * depth
    y = -(rows + 0.5 - meta["cy"]) / meta["fl_y"] * depth
    camera = np.stack([x, y, -depth], -1)
    return camera @ c2w[:3, :3].T + c2w[:3, 3]


def test_labels_and_depth_agree_across_views(scene):
    meta = json.loads((scene / "transforms.json").read_text())
    frames = meta["frames"]
    rng = np.random.default_rng(0)
    agree = total = 0
    for a, b in [(0, 1), (3, 4), (6, 7), (0, 7)]:
        c2w_a, c2w_b = (np.array(frames[i]["transform_matrix"]) for i in (a, b))
        depth_a = np.load(scene / "depth" / f"frame_{a:05d}.npy")
        depth_b = np.load(scene / "depth" / f"frame_{b:05d}.npy")
        labels_a = np.asarray(Image.open(scene / label_path(frames[a])))
        labels_b = np.asarray(Image.open(scene / label_path(frames[b])))
        rows, cols = rng.integers(1, 63, 400), rng.integers(1, 63, 400)
        # Points inside a region of one label, so that the pixel grid of the other view cannot straddle an edge.
        patches = np.stack([labels_a[rows + dr, cols + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
        valid = np.isfinite(depth_a[rows, cols]) & np.all(patches == labels_a[rows, cols], axis=0)
        points = _backproject(c2w_a, meta, rows[valid], cols[valid], depth_a[rows, cols][valid])
        camera = (points - c2w_b[:3, 3]) @ c2w_b[:3, :3]
        z = -camera[:, 2]
        u = meta["fl_x"] * camera[:, 0] / z + meta["cx"]
        v = -meta["fl_y"] * camera[:, 1] / z + meta["cy"]
        inside = (z > 0) & (u >= 0) & (u < 64) & (v >= 0) & (v < 64)
        ub, vb = u[inside].astype(int), v[inside].astype(int)
        # Seen by b without occlusion: b's own depth at that pixel matches the point's depth.
        seen = np.abs(depth_b[vb, ub] - z[inside]) < 0.02 * z[inside]
        total += int(seen.sum())
        agree += int((labels_b[vb, ub][seen] == labels_a[rows[valid], cols[valid]][inside][seen]).sum())
    assert total > 200, f"too few co-visible points ({total}) to judge consistency"
    assert agree / total > 0.95, f"labels agree for only {agree}/{total} co-visible points"


def test_point_cloud_lies_on_the_rendered_surfaces(scene):
    xyz, rgb = read_ply(scene / "sparse_pc.ply")
    assert 1000 <= len(xyz) <= 12000
    assert np.all(np.isfinite(xyz)) and xyz[:, 2].max() < 80.0
    assert np.mean(xyz[:, 2] > -0.5) > 0.97, "points come from surfaces at or above the ground (plus a little noise)"
    assert rgb.std() > 10, "point colours should come from the textured images"
    # Each point was back-projected from some view, so in that view it sits on the rendered surface.
    meta = json.loads((scene / "transforms.json").read_text())
    best = np.full(len(xyz), np.inf)
    for frame in meta["frames"]:
        c2w = np.array(frame["transform_matrix"])
        depth = np.load(scene / "depth" / (Path(frame["file_path"]).stem + ".npy"))
        camera = (xyz - c2w[:3, 3]) @ c2w[:3, :3]
        z = -camera[:, 2]
        u = np.floor(meta["fl_x"] * camera[:, 0] / z + meta["cx"]).astype(int)
        v = np.floor(-meta["fl_y"] * camera[:, 1] / z + meta["cy"]).astype(int)
        inside = (z > 0) & (u >= 0) & (u < 64) & (v >= 0) & (v < 64)
        error = np.full(len(xyz), np.inf)
        error[inside] = np.abs(depth[v[inside], u[inside]] - z[inside]) / z[inside]
        best = np.minimum(best, error)
    assert np.mean(best < 0.01) > 0.97, "points must lie on the surfaces the views rendered"


def test_nerfstudio_dataparser_reads_the_cameras(scene):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=scene, load_3D_points=False).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) >= 6
    assert all(Path(f).is_file() for f in outputs.image_filenames)
    assert int(outputs.cameras.width[0]) == 64 and int(outputs.cameras.height[0]) == 64


def test_nerfstudio_dataparser_reads_the_point_cloud(scene):
    try:
        import open3d  # noqa: F401  (nerfstudio reads the .ply through open3d)
    except (ImportError, OSError) as err:
        pytest.skip(f"open3d cannot be imported here, so nerfstudio cannot read any point cloud: {err}")
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=scene, load_3D_points=True).setup().get_dataparser_outputs("train")
    points = outputs.metadata["points3D_xyz"]
    assert points.shape[0] == len(read_ply(scene / "sparse_pc.ply")[0]) and points.shape[1] == 3
    assert outputs.metadata["points3D_rgb"].shape == points.shape


def test_every_class_appears_in_some_style(style_scenes):
    seen = set()
    for style, scene in style_scenes.items():
        values = set()
        for frame in load_frames(scene):
            values |= set(np.unique(np.asarray(Image.open(scene / label_path(frame)))).tolist())
        assert len(values - {255}) >= 6, f"{style} shows too few classes: {sorted(values)}"
        seen |= values
    assert set(range(SCENE_LABEL_SPACE.num_classes)) <= seen


def test_styles_differ(style_scenes):
    shares = {}
    for style, scene in style_scenes.items():
        counts = np.zeros(256)
        for frame in load_frames(scene):
            counts += np.bincount(np.asarray(Image.open(scene / label_path(frame))).reshape(-1), minlength=256)
        shares[style] = counts[:10] / counts[:10].sum()
    names = SCENE_LABEL_SPACE.names
    water, wall, vegetation = names.index("water"), names.index("building_wall"), names.index("vegetation")
    assert shares["riverside"][water] > 2 * max(shares[s][water] for s in ("downtown", "industrial"))
    assert shares["downtown"][wall] > shares["suburb"][wall]
    assert shares["suburb"][vegetation] > shares["industrial"][vegetation]


def test_refuses_to_overwrite_without_the_flag(tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_scene(tiny_config(target, num_views=2, width=16, height=16, num_labeled=1))
    generate_scene(tiny_config(target, num_views=2, width=16, height=16, num_labeled=1, overwrite=True))
    assert (target / "notes.txt").read_text() == "keep me"
    assert len(load_frames(target)) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(num_views=3, num_labeled=4), "cannot exceed"),
        (dict(num_labeled=0), "num_labeled"),
        (dict(width=8), "at least 16x16"),
        (dict(jpeg_quality=0), "jpeg_quality"),
        (dict(style="medieval"), "unknown style"),
        (dict(tilt_deg=0.0), "tilt_deg"),
        (dict(altitude=0.25), "raise --altitude"),  # cameras at 30 m, downtown towers reach higher
    ],
)
def test_bad_settings_are_refused_before_writing(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        generate_scene(tiny_config(tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad").exists()


def test_cli_prints_a_summary_and_reports_bad_input(tmp_path, capsys):
    cli_main(tiny_config(tmp_path / "cli", num_views=3, width=24, height=24, num_labeled=1, image_format="jpg"))
    out = capsys.readouterr().out
    assert "views: 3" in out and "labeled views: [1]" in out and "road" in out
    assert (tmp_path / "cli" / "images" / "frame_00000.jpg").is_file()
    with pytest.raises(SystemExit, match="not empty"):
        cli_main(tiny_config(tmp_path / "cli", num_views=3, width=24, height=24, num_labeled=1))


# --- grid flight (serpentine nadir survey lines) ---------------------------------------------------------------


def _ground_footprint(c2w: np.ndarray, intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned extent (min, max) on z = 0 of the rays through the image corners."""
    corners = np.array([[0, 0], [intrinsics.width, 0], [0, intrinsics.height], [intrinsics.width, intrinsics.height]])
    u = (corners[:, 0] - intrinsics.cx) / intrinsics.fx
    v = -(corners[:, 1] - intrinsics.cy) / intrinsics.fy
    directions = np.stack([u, v, -np.ones(4)], -1) @ c2w[:3, :3].T
    ground = c2w[:3, 3] - directions * (c2w[2, 3] / directions[:, 2:3])
    return ground[:, :2].min(0), ground[:, :2].max(0)


def _overlap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], axis: int) -> float:
    shared = min(a[1][axis], b[1][axis]) - max(a[0][axis], b[0][axis])
    return shared / (a[1][axis] - a[0][axis])


def test_grid_flight_is_serpentine_nadir_with_the_requested_overlap():
    from nerfseg_plugin.core.geometry import Intrinsics
    from nerfseg_plugin.scenegen.cameras import GridPlan, flight_path

    intrinsics = Intrinsics.from_fov(64, 48, 60.0)  # wide images: more lines than views per line
    plan = GridPlan.for_town(24, 120.0, intrinsics, overlap=0.65)
    assert plan.num_lines * plan.views_per_line == 24 and plan.num_lines > plan.views_per_line
    poses = flight_path("grid", 24, 120.0, 0.0, 0.0, 0.0, np.random.default_rng(0), intrinsics, overlap=0.65)
    assert len(poses) == 24
    footprints = [_ground_footprint(c2w, intrinsics) for c2w in poses]
    lines = [list(range(k * plan.views_per_line, (k + 1) * plan.views_per_line)) for k in range(plan.num_lines)]
    for k, line in enumerate(lines):
        heading = 1.0 if k % 2 == 0 else -1.0
        for i in line:
            assert np.allclose(poses[i][:3, 2], [0, 0, 1], atol=1e-9), "nadir: the camera looks straight down"
            assert np.allclose(poses[i][:3, 0], [heading, 0, 0], atol=1e-9), "image x along the flight direction"
        steps = np.diff([poses[i][0, 3] for i in line])
        assert np.all(steps * heading > 0), "alternate lines fly in opposite directions"
        for a, b in zip(line[:-1], line[1:], strict=True):
            assert _overlap(footprints[a], footprints[b], axis=0) == pytest.approx(0.65, abs=1e-6)
    for a, b in zip(lines[:-1], lines[1:], strict=True):  # side overlap between lines, at every station
        for i, j in zip(a, reversed(b), strict=True):
            assert _overlap(footprints[i], footprints[j], axis=1) == pytest.approx(0.65, abs=1e-6)
    # Serpentine: the next line starts where the previous one ended.
    for a, b in zip(lines[:-1], lines[1:], strict=True):
        assert poses[a[-1]][0, 3] == pytest.approx(poses[b[0]][0, 3])
    # The block of footprints spans the town.
    low, high = np.min([f[0] for f in footprints], axis=0), np.max([f[1] for f in footprints], axis=0)
    assert low[1] == pytest.approx(-60.0) and high[1] == pytest.approx(60.0)


@pytest.mark.parametrize("num_views", [1, 2, 7, 13, 64])
def test_grid_flight_has_exactly_num_views_with_small_attitude_noise(num_views):
    from nerfseg_plugin.core.geometry import Intrinsics
    from nerfseg_plugin.scenegen.cameras import flight_path

    intrinsics = Intrinsics.from_fov(64, 64, 60.0)
    poses = flight_path("grid", num_views, 120.0, 0.0, 0.0, 1.0, np.random.default_rng(1), intrinsics)
    assert len(poses) == num_views
    tilts = [np.degrees(np.arccos(np.clip(c2w[2, 2], -1, 1))) for c2w in poses]
    assert max(tilts) < 6.0, "attitude noise stays a few degrees"
    if num_views > 1:
        assert 0.0 < np.mean(tilts), "jitter perturbs the attitude"
        steps = np.linalg.norm(np.diff([c2w[:2, 3] for c2w in poses], axis=0), axis=1)
        assert steps.max() < 1.5 * np.median(steps), "consecutive views are neighbours (serpentine)"


def test_grid_flight_rises_above_tall_buildings():
    from nerfseg_plugin.core.geometry import Intrinsics
    from nerfseg_plugin.scenegen.cameras import GRID_MIN_ALTITUDE_OVER_TALLEST, GridPlan

    intrinsics = Intrinsics.from_fov(64, 64, 60.0)
    low = GridPlan.for_town(64, 120.0, intrinsics, overlap=0.7)
    assert low.forward_overlap == pytest.approx(0.7) and low.side_overlap == pytest.approx(0.7)
    high = GridPlan.for_town(64, 120.0, intrinsics, overlap=0.7, tallest=40.0)
    assert high.altitude == pytest.approx(GRID_MIN_ALTITUDE_OVER_TALLEST * 40.0) and high.altitude > low.altitude
    assert high.line_spacing == pytest.approx(low.line_spacing) and high.side_overlap > 0.7


def test_grid_scene_labeled_views_and_orientation(tmp_path):
    import torch

    from nerfseg_plugin.data.orientation import aerial_up_direction

    # Downtown towers are higher than the overlap-derived altitude: the grid must still render.
    scene = generate_scene(tiny_config(tmp_path / "grid", flight="grid", num_views=9, width=32, height=32))
    frames = load_frames(scene)
    assert [i for i, f in enumerate(frames) if "semantic_path" in f] == labeled_indices(9, 3)
    c2w = np.array([f["transform_matrix"] for f in frames])
    assert np.all(c2w[:, 2, 2] > np.cos(np.radians(6.0))), "nadir cameras"
    up = aerial_up_direction(torch.tensor(c2w[:, :3, :4], dtype=torch.float32))
    assert float(up[2]) > 0.999, "the dataparser's aerial orientation finds the vertical of a serpentine grid"
    # Explicit labeled views: the same scene (deterministic per seed), other frames marked for supervision.
    other = generate_scene(
        tiny_config(tmp_path / "other", flight="grid", num_views=9, width=32, height=32, labeled_views=(0, 8))
    )
    assert [i for i, f in enumerate(load_frames(other)) if "semantic_path" in f] == [0, 8]
    files, other_files = scene_files(scene), scene_files(other)
    assert {k: v for k, v in files.items() if k != "transforms.json"} == {
        k: v for k, v in other_files.items() if k != "transforms.json"
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(labeled_views=(0, 8)), "must be view indices in 0..7"),
        (dict(labeled_views=(1, 1)), "duplicates"),
        (dict(flight="grid", overlap=0.99), "overlap"),
    ],
)
def test_bad_grid_and_labeled_view_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        generate_scene(tiny_config(tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad").exists()
