"""--labels from annotation tools: LabelMe JSON folders and COCO polygon exports become label maps by class name;
every bad input (unknown class, empty or self-intersecting polygon, wrong size, unknown photo) is refused naming
the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools  # noqa: F401 - a required dependency: a broken install must fail, not skip
import pytest
import shapely  # noqa: F401 - a required dependency: a broken install must fail, not skip
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.process.annotations import is_annotation_export
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.labels import collect_inputs

WIDTH, HEIGHT = 40, 30
CLASSES = ["ground", "building", "tree"]
SQUARE = [[5, 5], [20, 5], [20, 20], [5, 20]]
INNER = [[8, 8], [12, 8], [12, 12], [8, 12]]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    for stem in ("a", "b"):
        Image.new("RGB", (WIDTH, HEIGHT), (90, 90, 90)).save(tmp_path / "images" / f"{stem}.jpg")
    classes = {"ignore_index": 255, "classes": [{"name": n, "color": [i * 40, 0, 0]} for i, n in enumerate(CLASSES)]}
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    return tmp_path


def _collect(root: Path, labels: Path):
    config = ProcessDataConfig(
        images=root / "images", labels=labels, classes=root / "classes.json", output=root / "out"
    )
    return collect_inputs(config, root / "work")


def _labelme(root: Path, shapes: list[dict], stem: str = "a", size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    folder = root / "labelme"
    folder.mkdir(exist_ok=True)
    data = {"shapes": shapes, "imagePath": f"{stem}.jpg", "imageWidth": size[0], "imageHeight": size[1]}
    (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_labelme_polygons_and_rectangles_become_a_label_map(photos: Path) -> None:
    shapes = [
        {"label": "building", "points": SQUARE, "shape_type": "polygon"},
        {"label": "tree", "points": INNER, "shape_type": "polygon"},  # drawn later: on top
        {"label": "ground", "points": [[25, 2], [38, 28]], "shape_type": "rectangle"},
    ]
    folder = _labelme(photos, shapes)
    assert is_annotation_export(folder)
    inputs = _collect(photos, folder)
    labels = _read(inputs.supervision["a.jpg"])
    assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint8
    assert labels[15, 15] == 1 and labels[10, 10] == 2 and labels[15, 30] == 0 and labels[25, 2] == 255
    assert list(inputs.supervision) == ["a.jpg"]


def _coco(root: Path, annotations: list[dict], categories=None, image_size=(WIDTH, HEIGHT)) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "b.jpg", "width": image_size[0], "height": image_size[1]}],
        "categories": categories or [{"id": 1, "name": "building"}, {"id": 2, "name": "tree"}],
        "annotations": annotations,
    }
    path = root / "coco.json"
    path.write_text(json.dumps(data))
    return path


def _flat(points: list[list[float]]) -> list[float]:
    return [float(v) for point in points for v in point]


def test_coco_polygons_paint_small_objects_on_top(photos: Path) -> None:
    export = _coco(
        photos,
        [
            {"id": 1, "image_id": 7, "category_id": 2, "segmentation": [_flat(INNER)]},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [_flat(SQUARE)]},
        ],
    )
    inputs = _collect(photos, export)
    labels = _read(inputs.supervision["b.jpg"])
    assert labels[15, 15] == 1 and labels[10, 10] == 2 and labels[2, 2] == 255 and labels[25, 35] == 255


BOWTIE = [[5, 5], [20, 20], [20, 5], [5, 20]]


@pytest.mark.parametrize(
    "shapes, problem",
    [
        ([{"label": "road", "points": SQUARE}], r"class 'road' is not in classes.json"),
        ([{"label": "tree", "points": [[1, 1], [5, 5]]}], "empty polygon"),
        ([{"label": "tree", "points": [[1, 1], [5, 5], [9, 9]]}], "empty polygon"),
        ([{"label": "tree", "points": BOWTIE}], "invalid polygon.*Self-intersection"),
        ([{"label": "tree", "points": SQUARE, "shape_type": "circle"}], "shape_type 'circle'"),
    ],
)
def test_bad_labelme_shapes_are_refused(photos: Path, shapes: list[dict], problem: str) -> None:
    folder = _labelme(photos, shapes)
    with pytest.raises(SceneFormatError, match=problem) as error:
        _collect(photos, folder)
    assert error.value.path == folder / "a.json"


def test_labelme_size_or_photo_mismatch_is_refused(photos: Path) -> None:
    folder = _labelme(photos, [{"label": "tree", "points": SQUARE}], size=(80, 60))
    with pytest.raises(SceneFormatError, match="80x60 image but photo a.jpg is 40x30"):
        _collect(photos, folder)
    (folder / "a.json").unlink()
    _labelme(photos, [{"label": "tree", "points": SQUARE}], stem="zzz")
    with pytest.raises(SceneFormatError, match="'zzz'.*no photo"):
        _collect(photos, folder)


@pytest.mark.parametrize(
    "case, problem",
    [
        ("unknown_category", "class 'road' is not in classes.json"),
        ("self_intersecting", "invalid polygon"),
        ("empty", "empty segmentation"),
        ("size", "80x60 image but photo b.jpg is 40x30"),
        ("unknown_image", "unknown image_id 99"),
    ],
)
def test_bad_coco_exports_are_refused(photos: Path, case: str, problem: str) -> None:
    annotation = {"id": 1, "image_id": 7, "category_id": 1, "segmentation": [_flat(SQUARE)]}
    categories, size = None, (WIDTH, HEIGHT)
    if case == "unknown_category":
        categories = [{"id": 1, "name": "road"}]
    elif case == "self_intersecting":
        annotation["segmentation"] = [_flat(BOWTIE)]
    elif case == "empty":
        annotation["segmentation"] = []
    elif case == "size":
        size = (80, 60)
    elif case == "unknown_image":
        annotation["image_id"] = 99
    export = _coco(photos, [annotation], categories, size)
    with pytest.raises(SceneFormatError, match=problem) as error:
        _collect(photos, export)
    assert error.value.path == export
