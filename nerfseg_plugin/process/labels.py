"""Finding the photos, matching label maps to them by file stem and checking everything before SfM starts.

Every check here runs in seconds, so a user learns about a mistyped file name or an RGB label map before waiting
for a reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.label_space import LabelSpace
from nerfseg_plugin.data.scene_validation import check_label_map
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.exif import PhotoExif, read_exif, upright_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
"""Lossless formats only: class indices do not survive JPEG compression."""
LOSSY_SUFFIXES = (".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ProcessingInputs:
    """The checked inputs: photos (file names, sorted) and, per photo name, its label files and EXIF."""

    image_dir: Path
    image_names: list[str]
    image_sizes: dict[str, tuple[int, int]]
    """(width, height) as displayed, i.e. after the EXIF orientation (what label maps must match)."""
    supervision: dict[str, Path]
    evaluation: dict[str, Path]
    label_space: LabelSpace
    exif: dict[str, PhotoExif] = field(default_factory=dict)

    @property
    def gps_names(self) -> list[str]:
        """Photos whose EXIF holds a GPS position."""
        return [name for name in self.image_names if name in self.exif and self.exif[name].gps is not None]

    @property
    def rotated_names(self) -> list[str]:
        """Photos whose EXIF orientation is not upright."""
        return [name for name in self.image_names if name in self.exif and self.exif[name].is_rotated]


def _files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise SceneFormatError(folder, f"{what} folder does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    """Map stem -> path; two files with one stem (a.jpg, a.png) are ambiguous."""
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise SceneFormatError(path, f"has the same stem as {stems[path.stem].name}; file stems must be unique")
        stems[path.stem] = path
    return stems


def list_images(folder: Path) -> dict[str, Path]:
    """Photos of ``folder`` by stem."""
    images = [p for p in _files(folder, "image") if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(images) < 2:
        raise SceneFormatError(folder, f"needs at least 2 photos ({', '.join(IMAGE_SUFFIXES)}), found {len(images)}")
    return _by_stem(images)


def match_labels(folder: Path, images_by_stem: dict[str, Path], image_dir: Path) -> dict[str, Path]:
    """Label maps of ``folder`` keyed by the name of the photo with the same stem."""
    files = _files(folder, "label")
    lossy = [p for p in files if p.suffix.lower() in LOSSY_SUFFIXES]
    if lossy:
        raise SceneFormatError(lossy[0], "lossy label map: JPEG/WebP corrupt class indices; save label maps as PNG")
    labels = _by_stem([p for p in files if p.suffix.lower() in LABEL_SUFFIXES])
    if not labels:
        raise SceneFormatError(folder, f"contains no label maps ({', '.join(LABEL_SUFFIXES)})")
    orphans = [path for stem, path in labels.items() if stem not in images_by_stem]
    if orphans:
        names = ", ".join(p.name for p in orphans[:10]) + (
            f" and {len(orphans) - 10} more" if len(orphans) > 10 else ""
        )
        raise SceneFormatError(
            orphans[0],
            f"no photo in {image_dir} has this file stem (label maps are matched to photos by stem); "
            f"label maps without a photo: {names}",
        )
    return {images_by_stem[stem].name: path for stem, path in labels.items()}


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        raise SceneFormatError(path, f"unreadable image: {err}") from None


def collect_inputs(config: ProcessDataConfig, annotation_dir: Path | None = None) -> ProcessingInputs:
    """Find photos and labels, check classes.json, every label map and the camera settings against the photos.

    Annotation-tool exports (LabelMe, COCO) given as --labels / --eval-labels are rasterised into label maps
    under ``annotation_dir`` first."""
    from nerfseg_plugin.process.annotations import is_annotation_export, rasterise_annotations

    label_space = LabelSpace.load(config.classes)
    images_by_stem = list_images(config.images)
    exif = {path.name: read_exif(path) for path in images_by_stem.values()}
    sizes_by_stem = {
        stem: upright_size(image_size(path), exif[path.name].orientation) for stem, path in images_by_stem.items()
    }
    folders = {}
    for key, source in (("labels", config.labels), ("eval_labels", config.eval_labels)):
        if source is not None and is_annotation_export(source):
            if annotation_dir is None:
                raise ValueError("annotation exports need a folder to rasterise into")
            source = rasterise_annotations(source, annotation_dir / key, images_by_stem, sizes_by_stem, label_space)
        folders[key] = source
    supervision = match_labels(folders["labels"], images_by_stem, config.images)
    evaluation = match_labels(folders["eval_labels"], images_by_stem, config.images) if config.eval_labels else {}
    both = sorted(set(supervision) & set(evaluation))
    if both:
        raise SceneFormatError(
            evaluation[both[0]],
            f"photo {both[0]} has both a training label ({supervision[both[0]]}) and an evaluation label; "
            "evaluation ground truth must never supervise",
        )
    names = sorted(path.name for path in images_by_stem.values())
    sizes = {path.name: sizes_by_stem[stem] for stem, path in images_by_stem.items()}
    for name, label_path in (*supervision.items(), *evaluation.items()):
        check_label_map(label_path, config.images / name, label_space, sizes[name])
    _check_camera_settings(config, sizes)
    return ProcessingInputs(config.images, names, sizes, supervision, evaluation, label_space, exif)


def _check_camera_settings(config: ProcessDataConfig, sizes: dict[str, tuple[int, int]]) -> None:
    distinct = sorted(set(sizes.values()))
    if config.single_camera and len(distinct) > 1:
        examples = [next(n for n, s in sizes.items() if s == size) for size in distinct[:3]]
        detail = ", ".join(f"{n} {sizes[n][0]}x{sizes[n][1]}" for n in examples)
        raise SceneFormatError(
            config.images,
            f"photos have {len(distinct)} different sizes ({detail}) but --single-camera shares one camera; "
            "pass --no-single-camera for mixed cameras",
        )
    if config.known_intrinsics is not None:
        _, _, cx, cy = config.known_intrinsics
        bad = [n for n, (w, h) in sizes.items() if not (0 < cx < w and 0 < cy < h)]
        if bad:
            w, h = sizes[bad[0]]
            raise SceneFormatError(
                config.images / bad[0], f"known_intrinsics principal point ({cx}, {cy}) lies outside this {w}x{h} photo"
            )
