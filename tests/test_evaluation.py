"""rsseg-eval: projection conventions, visibility, view consistency, the report writer, the pipeline pass (the same
numbers as ns-eval) and the benchmark harness's table."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import look_down_pose
from nerfstudio.cameras.cameras import Cameras, CameraType
from PIL import Image

from nerfseg_plugin.core.geometry import project_points, ray_distance_to_z, view_from_cameras
from nerfseg_plugin.core.keys import SEMANTIC_GT
from nerfseg_plugin.core.label_space import LabelSpace, SemanticClass
from nerfseg_plugin.evaluation.cli import ConsistencyConfig, score_consistency
from nerfseg_plugin.evaluation.consistency import observed_labels, point_zbuffer_depth, view_consistency
from nerfseg_plugin.evaluation.render import render_pipeline_views, sparse_points
from nerfseg_plugin.evaluation.report import write_report
from nerfseg_plugin.semantics.metrics import ConfusionMatrix
from nerfseg_plugin.semantics.outputs import SEMANTIC_LOGITS, predicted_labels

SIZE = 32
LABELS = LabelSpace((SemanticClass("road", (128, 64, 128)), SemanticClass("roof", (70, 70, 70)),
                     SemanticClass("car", (0, 0, 142))))  # fmt: skip


def cameras(angles: list[float]) -> Cameras:
    poses = torch.tensor([look_down_pose(a) for a in angles], dtype=torch.float32)[:, :3, :4]
    return Cameras(poses, fx=30.0, fy=28.0, cx=15.0, cy=17.0, width=SIZE, height=SIZE,
                   camera_type=CameraType.PERSPECTIVE)  # fmt: skip


def ground_depth(camera: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """nerfstudio's rays of the camera hitting the plane z = 0: (hit points [H, W, 3], ray distance [H, W])."""
    rays = camera.generate_rays(camera_indices=0)
    origins, directions = rays.origins.numpy().astype(np.float64), rays.directions.numpy().astype(np.float64)
    distance = -origins[..., 2] / directions[..., 2]
    return origins + distance[..., None] * directions, distance


def test_projection_and_depth_follow_nerfstudio_rays() -> None:
    camera = cameras([0.7])
    view = view_from_cameras(camera)
    hits, distance = ground_depth(camera)
    u, v, z = project_points(hits.reshape(-1, 3), view)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    np.testing.assert_allclose(u, (cols + 0.5).reshape(-1), atol=1e-3)
    np.testing.assert_allclose(v, (rows + 0.5).reshape(-1), atol=1e-3)
    np.testing.assert_allclose(ray_distance_to_z(distance, view).reshape(-1), z, rtol=1e-5)
    assert (z > 0).all() and (z < distance.reshape(-1)).all()  # off-centre rays are longer than their z


def test_observed_labels_needs_the_point_in_front_inside_and_unoccluded() -> None:
    camera = cameras([0.0])
    view = view_from_cameras(camera)
    hits, distance = ground_depth(camera)
    depth = ray_distance_to_z(distance, view)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[5, 9] = 2
    surface = hits[5, 9]
    eye = view.origin.double().numpy()
    behind_surface = surface + 0.5 * (surface - eye) / np.linalg.norm(surface - eye)
    behind_camera = eye + (eye - surface)
    outside = hits[5, 9] + np.array([100.0, 0.0, 0.0])
    observed = observed_labels(np.stack([surface, behind_surface, behind_camera, outside]), view, labels, depth, 0.02)
    assert observed.tolist() == [2, -1, -1, -1]


def test_point_zbuffer_hides_points_behind_a_surface() -> None:
    camera = cameras([1.0])
    view = view_from_cameras(camera)
    hits, _ = ground_depth(camera)
    surface = hits[::2, ::2].reshape(-1, 3)  # a sparse sample of the ground
    eye = view.origin.double().numpy()
    hidden = surface[10] + 0.3 * (surface[10] - eye)  # further along the same ray
    points = np.concatenate([surface, hidden[None]])
    depth = point_zbuffer_depth(points, view, cell=2)
    assert np.isfinite(depth).all()
    observed = observed_labels(points, view, np.ones((SIZE, SIZE), np.uint8), depth, 0.02)
    assert observed[-1] == -1 and (observed[:-1] == 1).mean() > 0.9


def consistency_case(label_maps: list[np.ndarray]):
    camera = cameras([0.0, 0.3, 0.6])
    views = [view_from_cameras(camera, i) for i in range(3)]
    depths = [ray_distance_to_z(ground_depth(camera[i : i + 1])[1], view) for i, view in enumerate(views)]
    points = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 3)) * [1, 1, 0]  # on the ground, seen by all three
    return view_consistency(points, views, label_maps, depths, 3, 0.05, "rendered-depth")


def test_view_consistency_counts_agreement_across_views() -> None:
    same = [np.full((SIZE, SIZE), 1, np.uint8)] * 3
    result = consistency_case(same)
    assert result.num_evaluated == 50 and result.mean_views_per_point == 3
    assert result.consistent_share == 1.0 and result.majority_agreement == 1.0
    assert result.per_class_consistent_share[1] == 1.0 and math.isnan(result.per_class_consistent_share[0])
    one_differs = same[:2] + [np.full((SIZE, SIZE), 2, np.uint8)]
    result = consistency_case(one_differs)
    assert result.consistent_share == 0.0 and result.majority_agreement == pytest.approx(2 / 3)
    ignored = same[:2] + [np.full((SIZE, SIZE), 255, np.uint8)]  # labels outside [0, K) are not observations
    result = consistency_case(ignored)
    assert result.consistent_share == 1.0 and result.mean_views_per_point == 2


def test_write_report_files_and_values(tmp_path: Path) -> None:
    gt = np.array([[0, 0, 1, 1], [0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 1, 0, 2]])
    metrics = ConfusionMatrix(3, 255).update(pred, gt).compute()
    consistency = consistency_case([np.full((SIZE, SIZE), k, np.uint8) for k in (1, 1, 2)])
    reference = consistency_case([np.full((SIZE, SIZE), 1, np.uint8)] * 3)
    report = write_report(tmp_path, metrics, LABELS, {"a": 0.5, "b": 1.5}, consistency, reference, {"method": "m"})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["method"] == "m" and saved["num_pixels"] == 7 and saved["num_views"] == 2
    assert saved["miou"] == pytest.approx(metrics.miou) and saved["total_accuracy"] == pytest.approx(5 / 7)
    assert saved["per_class"]["road"]["iou"] == pytest.approx(2 / 4) and saved["per_class"]["car"]["iou"] is None
    assert saved["render_time_per_view"]["mean_s"] == pytest.approx(1.0)
    assert saved["view_consistency"]["consistent_share"] == 0.0
    assert saved["view_consistency"]["ground_truth"]["consistent_share"] == 1.0
    assert "| road | 50.00 |" in (tmp_path / "per_class.md").read_text()
    for figure in ("confusion_matrix.png", "per_class.png", "view_consistency.png"):
        with Image.open(tmp_path / figure) as image:
            assert image.width > 300 and image.height > 200


def interrupt_json_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ``Path.write_text`` of metrics.json (or its temporary file) write half, then fail (a kill)."""
    write_text = Path.write_text

    def half_then_fail(path: Path, text: str, *args, **kwargs):
        if "metrics.json" in path.name:
            write_text(path, text[: len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt
        return write_text(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_then_fail)


def test_an_interrupted_report_leaves_no_metrics_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_matrix --resume trusts metrics.json's existence, so a half-written one must never appear."""
    metrics = ConfusionMatrix(3, 255).update(np.zeros((2, 2), int), np.zeros((2, 2), int)).compute()
    interrupt_json_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, metrics, LABELS, {"a": 0.5})
    assert not (tmp_path / "metrics.json").exists()


def test_an_interrupted_semantic_report_leaves_no_metrics_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from types import SimpleNamespace

    from nerfseg_plugin.pipeline import RssegPipeline

    model = SimpleNamespace(label_space=LABELS, take_label_maps=dict)
    pipeline = SimpleNamespace(
        get_average_eval_image_metrics=lambda step=None: {"miou": 0.5},
        appearance=None,
        datamanager=SimpleNamespace(eval_dataset=SimpleNamespace(image_filenames=[])),
        model=model,
        _keep_label_maps=False,
    )
    assert RssegPipeline.write_semantic_report(pipeline, tmp_path)["miou"] == 0.5  # the fake is complete enough
    (tmp_path / "metrics.json").unlink()
    interrupt_json_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        RssegPipeline.write_semantic_report(pipeline, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_write_report_refuses_an_empty_evaluation(tmp_path: Path) -> None:
    empty = ConfusionMatrix(3, 255).update(np.zeros((2, 2), int), np.full((2, 2), 255)).compute()
    with pytest.raises(ValueError, match="no evaluated pixel"):
        write_report(tmp_path, empty, LABELS, {})


@pytest.mark.slow
def test_pipeline_pass_reports_the_same_numbers_as_ns_eval(tiny_scene: Path) -> None:
    """A real (untrained) rsseg-splat-lite pipeline: rsseg-eval's pass must score exactly what ns-eval scores."""
    from training_utils import setup_pipeline

    from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite

    pipeline, _, _ = setup_pipeline(rsseg_splat_lite.config, tiny_scene, num_downscales=0)
    pipeline.eval()
    rendered = render_pipeline_views(pipeline, "eval")
    ns_eval = pipeline.get_average_eval_image_metrics()
    ours = rendered.confusion.compute()
    assert ours.miou == pytest.approx(ns_eval["miou"]) and ours.total_accuracy == pytest.approx(
        ns_eval["total_accuracy"]
    )
    assert ours.num_pixels == ns_eval["num_semantic_pixels"]
    assert rendered.mean_psnr == pytest.approx(ns_eval["psnr"], abs=1e-3)  # the RGB side of the report too
    assert len(rendered.seconds_per_view) == len(pipeline.datamanager.eval_dataset) == len(rendered.views)
    points = sparse_points(pipeline)
    assert points is not None and len(points) > 100
    for visibility in ("rendered-depth", "point-zbuffer"):
        config = ConsistencyConfig(visibility=visibility)
        result, reference = score_consistency(rendered, points, pipeline.model.label_space.num_classes, config)
        assert result.num_evaluated > 0 and reference.num_evaluated > 0
        assert 0.0 <= result.consistent_share <= 1.0


def load_harness():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_matrix.py"
    spec = importlib.util.spec_from_file_location("run_matrix", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_matrix"] = module
    spec.loader.exec_module(module)
    return module


def test_semantic_report_renders_each_view_once_for_metrics_and_label_maps(tiny_scene: Path, tmp_path: Path) -> None:
    from training_utils import setup_pipeline

    from nerfseg_plugin.export.label_maps import render_label_map
    from nerfseg_plugin.method_configs.splat_methods import rsseg_splat_lite

    pipeline, _, _ = setup_pipeline(rsseg_splat_lite.config, tiny_scene, num_downscales=0)
    model = pipeline.model
    rendered: list[tuple[float, ...]] = []
    get_outputs_for_camera = model.get_outputs_for_camera  # what nerfstudio's metrics loop calls per view

    def counting(camera, *args, **kwargs):
        rendered.append(tuple(camera.camera_to_worlds.flatten().tolist()))
        return get_outputs_for_camera(camera, *args, **kwargs)

    model.get_outputs_for_camera = counting
    metrics = pipeline.write_semantic_report(tmp_path)
    del model.get_outputs_for_camera
    dataset = pipeline.datamanager.eval_dataset
    expected_views = [
        tuple(dataset.cameras[i : i + 1].camera_to_worlds.flatten().tolist()) for i in range(len(dataset))
    ]
    assert rendered == expected_views, "one render per eval view serves the metrics and the label maps"
    assert (tmp_path / "classes.json").is_file()
    pipeline.eval()
    label_space = model.label_space
    confusion = ConfusionMatrix(label_space.num_classes, label_space.ignore_index)
    for index, name in enumerate(dataset.image_filenames):
        written = np.asarray(Image.open(tmp_path / "labels" / f"{Path(name).stem}.png"))
        camera = dataset.cameras[index : index + 1]
        expected = render_label_map(model, camera, label_space.ignore_index, 0.05)
        assert (written == expected).all()
        predicted = predicted_labels(model.get_outputs_for_camera(camera)[SEMANTIC_LOGITS]).numpy()
        confusion.update(predicted, dataset[index][SEMANTIC_GT].numpy())
    assert len(list((tmp_path / "labels_colour").glob("*.png"))) == len(dataset)
    # metrics.json agrees with an independent scoring of the written label maps against the ground truth
    assert metrics["miou"] == pytest.approx(confusion.compute().miou, abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["miou"] == pytest.approx(metrics["miou"])


def test_harness_orders_cells_and_tabulates_the_augmentation_gain(tmp_path: Path) -> None:
    harness = load_harness()
    config = harness.MatrixConfig(methods=("unet", "colour"), ablations=("full", "rendered-labels"))
    cells = harness.Matrix(config).cells()
    assert cells == [("rsseg-splat-lite", "full"), ("unet", "full"), ("unet", "rendered-labels"), ("colour", "full")]

    def record(method: str, ablation: str, miou: float) -> dict:
        report = {"miou": miou, "total_accuracy": 0.9, "average_accuracy": 0.8, "train_time_s": 12.0,
                  "render_time_per_view": {"mean_s": 0.02}, "class_names": ["road"],
                  "per_class": {"road": {"iou": miou}}, "view_consistency": None}  # fmt: skip
        return {"scene": "s", "method": method, "ablation": ablation, "status": "ok", "report": report}

    records = [record("unet", "full", 0.40), record("unet", "rendered-labels", 0.55)]
    records.append({"scene": "s", "method": "colour", "ablation": "full", "status": "failed: CellFailed: boom"})
    pseudo = {"scene": "s", "method": "vote", "seconds": 3.0, "coverage": 0.7, "accuracy": 0.94, "miou": 0.8,
              "boundary_fraction": 1.0, "coverage_in_boundary": 0.7, "accuracy_in_boundary": 0.94}  # fmt: skip
    machine = {"cpu_count": 2, "load_average": "1.0", "cuda": False, "date": "today"}
    table = harness.markdown(records, "python benchmarks/run_matrix.py", machine, [pseudo])
    assert "| s | unet | full | 40.0 | 90.0 | 80.0 |" in table
    assert "| s | vote | 70.0 | 94.0 | 80.0 | 100.0 | 70.0 | 94.0 | 3.0 |" in table
    cells = harness.Matrix(harness.MatrixConfig(methods=("rsseg-splat-lite",), ablations=("all",))).cells()
    assert ("rsseg-splat-lite", "no-pseudo-labels") in cells
    assert "40.0 (labeled views) -> 55.0 (+ rendered labels of all views), +15.0 points" in table
    assert "failed: CellFailed: boom" in table
    harness.plot(records, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- benchmark:m:start -->\nold\n<!-- benchmark:m:end -->\nrest\n")
    harness.update_readme(readme, table, "m")
    text = readme.read_text()
    assert "old" not in text and "+15.0 points" in text and text.endswith("<!-- benchmark:m:end -->\nrest\n")
