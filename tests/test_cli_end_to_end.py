"""The user's path through nerfstudio's own commands on a tiny generated scene, on CPU, under torch >= 2.6:
ns-train (with its semantic report) -> ns-eval -> ns-render -> rsseg-export-labels -> --load-dir resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # A bare PATH: no system ffmpeg, so ns-render must find the one the plugin ships.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin"}
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def trained_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = tmp_path_factory.mktemp("runs")
    result = run(
        str(BIN / "ns-train"),
        "rsseg-splat-lite",
        "--data",
        str(tiny_scene),
        "--output-dir",
        str(outputs),
        "--timestamp",
        "run",
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "30",
        "--steps-per-save",
        "30",
        # Both 2D appearance rounds run (steps 10 and 18), with short 2D trainings: the CLI path, not its accuracy.
        "--pipeline.appearance.steps-first-round",
        "40",
        "--pipeline.appearance.steps-later-rounds",
        "20",
        cwd=outputs,
    )
    run_dir = outputs / tiny_scene.name / "rsseg-splat-lite" / "run"
    assert "Semantic report" in result.stdout and str(run_dir / "semantic_report") in result.stdout.replace("\n", "")
    return run_dir


def test_training_writes_its_semantic_report(trained_run: Path, tiny_scene: Path) -> None:
    report = trained_run / "semantic_report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert any(key.startswith("iou/") for key in metrics)
    meta = json.loads((tiny_scene / "transforms.json").read_text())
    # Chance level: labels drawn at random with the evaluation ground truth's class frequencies p score
    # IoU p / (2 - p) per class; a trained model must beat that (an untrained or broken one does not).
    truth = np.concatenate(
        [
            np.asarray(Image.open(tiny_scene / f["semantic_eval_path"])).ravel()
            for f in meta["frames"]
            if "semantic_eval_path" in f
        ]
    )
    counts = np.bincount(truth[truth != 255], minlength=256)
    shares = counts[counts > 0] / counts.sum()
    chance = float(np.mean(shares / (2 - shares)))
    assert metrics["miou"] > chance
    eval_stems = sorted(Path(f["file_path"]).stem for f in meta["frames"] if "semantic_eval_path" in f)
    assert sorted(p.stem for p in (report / "labels").glob("*.png")) == eval_stems
    # the 2D appearance model alone, on the same views (all evaluation views are training views here)
    assert 0.0 <= metrics["appearance_2d/miou"] <= 1.0
    assert sorted(p.stem for p in (report / "appearance_2d" / "labels").glob("*.png")) == eval_stems


def test_ns_eval_loads_the_checkpoint_and_reports_dataset_metrics(trained_run: Path) -> None:
    output = trained_run / "eval.json"
    run(
        str(BIN / "ns-eval"),
        "--load-config",
        str(trained_run / "config.yml"),
        "--output-path",
        str(output),
        cwd=trained_run,
    )
    results = json.loads(output.read_text())["results"]
    assert {"psnr", "miou", "total_accuracy", "average_accuracy"} <= set(results)
    assert "miou_std" not in results, "semantic metrics are dataset-level, not per-image averages"


def test_ns_render_renders_semantic_colormaps(trained_run: Path) -> None:
    output = trained_run / "render"
    run(
        str(BIN / "ns-render"),
        "dataset",
        "--load-config",
        str(trained_run / "config.yml"),
        "--output-path",
        str(output),
        "--rendered-output-names",
        "semantics_colormap",
        "--split",
        "test",
        cwd=trained_run,
    )
    frames = sorted((output / "test" / "semantics_colormap").iterdir())
    assert frames and np.asarray(Image.open(frames[0])).shape[-1] == 3


def test_export_labels_writes_index_maps_and_gaussians(trained_run: Path, tiny_scene: Path) -> None:
    output = trained_run / "export"
    run(
        str(BIN / "rsseg-export-labels"),
        "--load-config",
        str(trained_run / "config.yml"),
        "--output-dir",
        str(output),
        "--split",
        "all",
        cwd=trained_run,
    )
    labels = sorted((output / "labels").glob("*.png"))
    assert len(labels) == len(json.loads((tiny_scene / "transforms.json").read_text())["frames"])
    image = Image.open(labels[0])
    assert image.mode == "L" and int(np.asarray(image).max()) < 10
    assert (output / "gaussians.ply").stat().st_size > 0 and (output / "labels_colour" / labels[0].name).is_file()


def test_training_resumes_from_a_checkpoint(trained_run: Path, tiny_scene: Path) -> None:
    result = run(
        str(BIN / "ns-train"),
        "rsseg-splat-lite",
        "--data",
        str(tiny_scene),
        "--output-dir",
        str(trained_run / "resumed"),
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "2",
        "--load-dir",
        str(trained_run / "nerfstudio_models"),
        "--pipeline.final-report",
        "False",
        cwd=trained_run,
    )
    assert "Done loading Nerfstudio checkpoint" in result.stdout.replace("\n", " ")
