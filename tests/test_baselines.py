"""2D baselines: the colour-lookup classifier, the UNet, what they train on, and rsseg-baseline end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nerfseg_plugin.baselines.cli import BaselineRun, run_baseline
from nerfseg_plugin.baselines.colour_lookup import ColourLookupClassifier, ColourLookupConfig
from nerfseg_plugin.baselines.data import evaluation_views, load_scene, training_views
from nerfseg_plugin.baselines.unet import UNet, UNetConfig, UNetSegmenter
from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.semantics.metrics import ConfusionMatrix

PALETTE = np.array([[200, 40, 40], [40, 180, 60], [50, 60, 200]], dtype=np.float64)


def stripes(seed: int, size: int = 32, noise: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal class stripes; each class has its own colour plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 3, size // 4), 4)[:, None].repeat(size, axis=1).astype(np.uint8)
    image = np.clip(PALETTE[labels] + rng.normal(0, noise, (size, size, 3)), 0, 255).astype(np.uint8)
    return image, labels


def test_colour_lookup_separates_colours_and_generalises_to_nearby_ones() -> None:
    classifier = ColourLookupClassifier(ColourLookupConfig(), num_classes=4, ignore_index=255)
    classifier.fit([stripes(0), stripes(1)])
    image, labels = stripes(2, noise=12.0)  # wider noise: colours in bins never seen in training
    assert (classifier.predict(image) == labels).mean() > 0.97
    assert 3 not in classifier.table  # a class without training pixels is never predicted


def test_colour_lookup_skips_ignored_pixels_and_rejects_foreign_labels() -> None:
    image, labels = stripes(0)
    misleading = labels.copy()
    misleading[:, :16] = 255
    image[:, :16] = PALETTE[2].astype(np.uint8)  # ignored pixels with another class's colour
    classifier = ColourLookupClassifier(ColourLookupConfig(), 3, ignore_index=255).fit([(image, misleading)])
    test_image, test_labels = stripes(5)
    assert (classifier.predict(test_image) == test_labels).mean() > 0.97
    with pytest.raises(ValueError, match="outside"):
        ColourLookupClassifier(ColourLookupConfig(), 2, 255).fit([stripes(0)])


def test_unet_keeps_any_input_size() -> None:
    network = UNet(3, 5, base_channels=4, depth=3).eval()
    with torch.no_grad():
        assert network(torch.rand(2, 3, 37, 50)).shape == (2, 5, 37, 50)


def test_unet_learns_from_labeled_pixels_only() -> None:
    views = [stripes(seed) for seed in range(3)]
    views = [(image, np.where(np.arange(32)[None, :] < 24, labels, 255).astype(np.uint8)) for image, labels in views]
    config = UNetConfig(base_channels=8, depth=2, steps=40, batch_size=4, crop_size=24, learning_rate=1e-2)
    config.num_threads = 1  # the test machine's cores are shared: avoid thread oversubscription
    segmenter = UNetSegmenter(config, num_classes=3, ignore_index=255)
    seconds = segmenter.fit(views)
    assert seconds > 0 and segmenter.losses[-1] < 0.5 * segmenter.losses[0]
    image, labels = stripes(7)
    prediction = segmenter.predict(image)
    assert prediction.dtype == np.uint8 and (prediction == labels).mean() > 0.9
    with pytest.raises(ValueError, match="no labeled pixel"):
        UNetSegmenter(config, 3, 255).fit([(image, np.full_like(labels, 255))])


def test_training_reads_supervision_and_extra_labels_never_evaluation(tiny_scene: Path, tmp_path: Path) -> None:
    scene = load_scene(tiny_scene)
    supervised = [f.image_path.stem for f in scene.frames if f.supervision_path is not None]
    assert [v.stem for v in training_views(scene)] == supervised
    evaluated = {view.stem for _, view in evaluation_views(scene)}
    assert evaluated and not evaluated & set(supervised)

    extra = tmp_path / "rendered" / "labels"
    extra.mkdir(parents=True)
    for frame in scene.frames:  # a rendered label map for every view, all "class 1"
        Image.fromarray(np.ones((64, 64), np.uint8), mode="L").save(extra / f"{frame.image_path.stem}.png")
    views = {v.stem: v for v in training_views(scene, tmp_path / "rendered")}
    assert set(views) == set(scene.stems)
    for stem in supervised:  # real labels win over rendered ones
        assert not (views[stem].labels == 1).all()

    Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(extra / f"{scene.stems[-1]}.png")
    with pytest.raises(SceneFormatError, match=scene.stems[-1]):
        training_views(scene, extra)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SceneFormatError, match="no <image stem>.png"):
        training_views(scene, empty)


@pytest.mark.parametrize("method", ["colour", "unet"])
def test_rsseg_baseline_end_to_end(tiny_scene: Path, tmp_path: Path, method: str) -> None:
    unet = UNetConfig(base_channels=4, depth=2, steps=3, batch_size=2, crop_size=32, num_threads=1)
    run = BaselineRun(data=tiny_scene, method=method, output_dir=tmp_path / method, unet=unet)
    report = run_baseline(run, load_scene(tiny_scene))
    saved = json.loads((tmp_path / method / "metrics.json").read_text())
    assert saved["method"] == {"colour": "colour-lookup", "unet": "unet-2d"}[method]
    assert saved["miou"] == pytest.approx(report["miou"])
    # an independent scoring of the written label maps against the evaluation ground truth gives the same mIoU
    scene = load_scene(tiny_scene)
    confusion = ConfusionMatrix(scene.label_space.num_classes, scene.label_space.ignore_index)
    for _, view in evaluation_views(scene):
        confusion.update(np.asarray(Image.open(tmp_path / method / "labels" / f"{view.stem}.png")), view.labels)
    assert saved["miou"] == pytest.approx(confusion.compute().miou)
    assert saved["total_accuracy"] == pytest.approx(confusion.compute().total_accuracy)
    assert saved["num_training_views"] == 2 and saved["train_time_s"] >= 0
    consistency = saved["view_consistency"]
    assert consistency["visibility"] == "point-zbuffer" and consistency["num_evaluated"] > 0
    assert consistency["ground_truth"]["majority_agreement"] > 0.8  # exact labels are (nearly) consistent
    stems = {view.stem for _, view in evaluation_views(load_scene(tiny_scene))}
    assert {p.stem for p in (tmp_path / method / "labels").glob("*.png")} == stems
    for figure in ("confusion_matrix.png", "per_class.png", "view_consistency.png"):
        assert (tmp_path / method / figure).is_file()


def test_rsseg_baseline_needs_evaluation_frames(minimal_scene: Path, tmp_path: Path) -> None:
    transforms = json.loads((minimal_scene / "transforms.json").read_text())
    for frame in transforms["frames"]:
        frame.pop("semantic_eval_path", None)
    (minimal_scene / "transforms.json").write_text(json.dumps(transforms))
    run = BaselineRun(data=minimal_scene, method="colour", output_dir=tmp_path / "out")
    with pytest.raises(SceneFormatError, match="semantic_eval_path"):
        run_baseline(run, load_scene(minimal_scene))
