"""Label maps from annotation-tool exports: LabelMe JSON files and COCO (or CVAT's COCO) polygon exports.

Shapes are mapped to classes.json by class name and painted on an ignore-filled map of the photo's displayed size:
LabelMe shapes in file order (later shapes on top, as LabelMe draws them), COCO annotations largest first so that
small objects inside larger ones stay visible. Unknown class names, empty or self-intersecting polygons and size
mismatches raise SceneFormatError naming the export file and the shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.core.scene_io import read_json

LABEL_MAP_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")


def is_annotation_export(source: Path) -> bool:
    """A COCO JSON file, or a folder of LabelMe JSON files (and no label maps)."""
    if source.is_file():
        return source.suffix.lower() == ".json"
    if not source.is_dir():
        return False
    files = [p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")]
    has_json = any(p.suffix.lower() == ".json" for p in files)
    return has_json and not any(p.suffix.lower() in LABEL_MAP_SUFFIXES for p in files)


def _read_json(path: Path) -> dict:
    data = read_json(path, "annotation JSON")
    if not isinstance(data, dict):
        raise SceneFormatError(path, "annotation JSON must be an object")
    return data


def _class_index(name: object, label_space: LabelSpace, path: Path, where: str) -> int:
    if not isinstance(name, str) or name not in label_space.names:
        raise SceneFormatError(path, f"{where}: class {name!r} is not in classes.json ({', '.join(label_space.names)})")
    return label_space.names.index(name)


def check_polygon(points: np.ndarray, path: Path, where: str) -> None:
    """At least 3 points, positive area, no self-intersection (shapely's validity test)."""
    from shapely.geometry import Polygon
    from shapely.validation import explain_validity

    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
        raise SceneFormatError(path, f"{where}: empty polygon (needs at least 3 finite x, y points)")
    polygon = Polygon(points)
    if np.linalg.matrix_rank(points - points.mean(0), tol=1e-9) < 2:  # all points on one line
        raise SceneFormatError(path, f"{where}: empty polygon (zero area)")
    if not polygon.is_valid:
        raise SceneFormatError(path, f"{where}: invalid polygon ({explain_validity(polygon)})")
    if polygon.area <= 0:
        raise SceneFormatError(path, f"{where}: empty polygon (zero area)")


def _photo_for(stem: str, images_by_stem: dict[str, Path], path: Path) -> Path:
    if stem not in images_by_stem:
        raise SceneFormatError(path, f"annotates '{stem}', but no photo has that file stem")
    return images_by_stem[stem]


def _check_size(width: object, height: object, expected: tuple[int, int], path: Path, photo: Path) -> None:
    if width is None or height is None:
        return
    if (int(width), int(height)) != expected:
        raise SceneFormatError(
            path, f"annotations are for a {width}x{height} image but photo {photo.name} is {expected[0]}x{expected[1]}"
        )


def _save(labels: np.ndarray, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, mode="L").save(target)


def labelme_to_label_map(path: Path, size: tuple[int, int], label_space: LabelSpace) -> np.ndarray:
    """One LabelMe file -> ``[H, W]`` uint8 label map (polygons and rectangles)."""
    data = _read_json(path)
    canvas = Image.new("L", size, label_space.ignore_index)
    draw = ImageDraw.Draw(canvas)
    for index, shape in enumerate(data.get("shapes") or []):
        where = f"shape {index} ('{shape.get('label')}')" if isinstance(shape, dict) else f"shape {index}"
        if not isinstance(shape, dict):
            raise SceneFormatError(path, f"{where} is not an object")
        value = _class_index(shape.get("label"), label_space, path, where)
        points = np.asarray(shape.get("points") or [], dtype=np.float64)
        kind = shape.get("shape_type") or "polygon"
        if kind == "rectangle" and points.shape == (2, 2):
            (x0, y0), (x1, y1) = points.min(0), points.max(0)
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif kind != "polygon":
            raise SceneFormatError(path, f"{where}: shape_type '{kind}' cannot become a label area (polygon/rectangle)")
        check_polygon(points, path, where)
        draw.polygon([tuple(p) for p in points.tolist()], fill=value)
    return np.asarray(canvas, dtype=np.uint8)


def _coco_mask(annotation: dict, height: int, width: int, path: Path, where: str) -> np.ndarray:
    from pycocotools import mask as coco_mask

    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, list):
        if not segmentation:
            raise SceneFormatError(path, f"{where}: empty segmentation")
        for polygon in segmentation:
            check_polygon(np.asarray(polygon, dtype=np.float64).reshape(-1, 2), path, where)
        rles = coco_mask.frPyObjects([list(map(float, p)) for p in segmentation], height, width)
        rle = coco_mask.merge(rles)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        counts = segmentation["counts"]
        rle = coco_mask.frPyObjects(segmentation, height, width) if isinstance(counts, list) else segmentation
    else:
        raise SceneFormatError(path, f"{where}: needs 'segmentation' polygons or RLE")
    mask = coco_mask.decode(rle).astype(bool)
    if not mask.any():
        raise SceneFormatError(path, f"{where}: empty polygon (covers no pixel)")
    return mask


def coco_to_label_maps(
    path: Path, images_by_stem: dict[str, Path], sizes_by_stem: dict[str, tuple[int, int]], label_space: LabelSpace
) -> dict[str, np.ndarray]:
    """A COCO export -> label map per photo stem (images without annotations are left out)."""
    data = _read_json(path)
    try:
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = {image["id"]: image for image in data["images"]}
        annotations = list(data.get("annotations") or [])
    except (KeyError, TypeError) as err:
        raise SceneFormatError(path, f"not a COCO export (needs images, annotations, categories): {err}") from None
    by_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    maps = {}
    for image_id, group in by_image.items():
        if image_id not in images:
            raise SceneFormatError(path, f"annotation {group[0].get('id')} refers to unknown image_id {image_id}")
        image = images[image_id]
        stem = Path(str(image.get("file_name", ""))).stem
        photo = _photo_for(stem, images_by_stem, path)
        width, height = sizes_by_stem[stem]
        _check_size(image.get("width"), image.get("height"), (width, height), path, photo)
        painted = []
        for annotation in group:
            where = f"annotation {annotation.get('id')} on {image.get('file_name')}"
            name = categories.get(annotation.get("category_id"))
            value = _class_index(name, label_space, path, where)
            mask = _coco_mask(annotation, height, width, path, where)
            painted.append((int(mask.sum()), value, mask))
        labels = np.full((height, width), label_space.ignore_index, np.uint8)
        for _, value, mask in sorted(painted, key=lambda item: -item[0]):
            labels[mask] = value
        maps[stem] = labels
    return maps


def rasterise_annotations(
    source: Path,
    target_dir: Path,
    images_by_stem: dict[str, Path],
    sizes_by_stem: dict[str, tuple[int, int]],
    label_space: LabelSpace,
) -> Path:
    """Write ``<stem>.png`` label maps for a COCO file or a LabelMe folder into ``target_dir``; returns it."""
    target_dir.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        maps = coco_to_label_maps(source, images_by_stem, sizes_by_stem, label_space)
        if not maps:
            raise SceneFormatError(source, "COCO export has no annotations")
        for stem, labels in maps.items():
            _save(labels, target_dir / f"{stem}.png")
        return target_dir
    for path in sorted(p for p in source.glob("*.json") if not p.name.startswith(".")):
        photo = _photo_for(path.stem, images_by_stem, path)
        data = _read_json(path)
        size = sizes_by_stem[path.stem]
        _check_size(data.get("imageWidth"), data.get("imageHeight"), size, path, photo)
        _save(labelme_to_label_map(path, size, label_space), target_dir / f"{path.stem}.png")
    return target_dir
