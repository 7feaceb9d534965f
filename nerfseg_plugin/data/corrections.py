"""The corrections store ``SCENE/corrections/``: one 8-bit label map per correction plus ``manifest.json``.

A label map holds the corrected class inside the clicked region and 255 elsewhere. The manifest lists the
corrections in the order they were made, with the camera they were made in, the click and a timestamp. Files are
written to a temporary name and renamed into place, PNG before manifest when adding and manifest before PNG when
undoing, so a crash leaves at worst an unlisted PNG (ignored), never a listed correction without its map.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from jaxtyping import UInt8
from PIL import Image

from nerfseg_plugin.core.atomic import write_atomic
from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.keys import NO_CORRECTION
from nerfseg_plugin.core.scene_io import read_json, read_label_map

CORRECTIONS_DIR = "corrections"
MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Correction:
    """One click's correction of one training frame."""

    id: str
    """Unique, sortable name; the label map is ``<id>.png``."""
    frame: str
    """Stem of the training image the label map belongs to."""
    class_index: int
    """The class the region was labeled with."""
    class_name: str
    """Its name in the scene's classes.json (for people reading the manifest)."""
    click_xy: tuple[int, int]
    """Clicked pixel in the frame's label map (column, row)."""
    width: int
    """Label map width (the frame's training resolution)."""
    height: int
    """Label map height."""
    camera: dict
    """The frame's camera when the correction was made: ``camera_to_world`` (3x4, nerfstudio world after the
    dataparser transform), ``fx``, ``fy``, ``cx``, ``cy``; plus ``viewer_camera_to_world`` and ``viewer_screen_xy``
    (normalised click position) when made in the viewer."""
    region: str
    """How the region was derived: "sam2" or "flood"."""
    source: str
    """"viewer" or "simulation"."""
    timestamp: str
    """UTC, ISO 8601."""

    @property
    def file_name(self) -> str:
        return f"{self.id}.png"


def _parse_entry(entry: object, manifest: Path) -> Correction:
    if not isinstance(entry, dict):
        raise SceneFormatError(manifest, f"each correction must be an object, got {entry!r}")
    try:
        correction = Correction(**{**entry, "click_xy": tuple(entry["click_xy"])})
    except (TypeError, KeyError) as err:
        raise SceneFormatError(manifest, f"malformed correction entry {entry.get('id')!r}: {err}") from None
    if not isinstance(correction.class_index, int) or not 0 <= correction.class_index < NO_CORRECTION:
        raise SceneFormatError(manifest, f"correction {correction.id!r} has class_index {correction.class_index!r}")
    return correction


class CorrectionStore:
    """Reads, adds and undoes corrections in one folder; keeps the manifest's list in memory."""

    def __init__(self, directory: Path, num_classes: int | None = None) -> None:
        self.directory = directory
        self.num_classes = num_classes
        self.corrections: list[Correction] = self._read_manifest()

    @classmethod
    def for_scene(cls, scene_dir: Path, num_classes: int | None = None) -> CorrectionStore:
        return cls(scene_dir / CORRECTIONS_DIR, num_classes)

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME

    def _read_manifest(self) -> list[Correction]:
        path = self.manifest_path
        if not path.exists():
            return []
        data = read_json(path, "corrections manifest")
        if not isinstance(data, dict) or not isinstance(data.get("corrections"), list):
            raise SceneFormatError(path, "expected {'schema_version': 1, 'corrections': [...]}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise SceneFormatError(path, f"schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}")
        return [_parse_entry(entry, path) for entry in data["corrections"]]

    def _write_manifest(self, corrections: list[Correction]) -> None:
        payload = {"schema_version": SCHEMA_VERSION, "corrections": [asdict(c) for c in corrections]}
        text = json.dumps(payload, indent=2) + "\n"
        write_atomic(self.manifest_path, lambda temp: temp.write_text(text, encoding="utf-8"))

    def label_map(self, correction: Correction) -> UInt8[np.ndarray, "H W"]:
        """The correction's label map, checked against its manifest entry (clear error naming the PNG)."""
        path = self.directory / correction.file_name
        labels = read_label_map(path)
        if labels.shape != (correction.height, correction.width):
            raise SceneFormatError(
                path, f"is {labels.shape[1]}x{labels.shape[0]}, manifest says {correction.width}x{correction.height}"
            )
        values = set(np.unique(labels).tolist()) - {NO_CORRECTION}
        if values - {correction.class_index}:
            raise SceneFormatError(path, f"holds classes {sorted(values)}, manifest says {correction.class_index}")
        return labels

    def merged(self) -> dict[str, UInt8[np.ndarray, "H W"]]:
        """Per frame stem, all its corrections in one map (a later correction wins where regions overlap)."""
        merged: dict[str, np.ndarray] = {}
        for correction in self.corrections:
            labels = self.label_map(correction)
            if correction.frame in merged and merged[correction.frame].shape != labels.shape:
                raise SceneFormatError(
                    self.directory / correction.file_name, "differs in size from earlier corrections of its frame"
                )
            base = merged.setdefault(correction.frame, np.full(labels.shape, NO_CORRECTION, np.uint8))
            base[labels != NO_CORRECTION] = labels[labels != NO_CORRECTION]
        return merged

    def add(
        self,
        frame: str,
        region: np.ndarray,
        class_index: int,
        class_name: str,
        click_xy: tuple[int, int],
        camera: dict,
        region_method: str,
        source: str,
    ) -> Correction:
        """Save ``region`` (bool ``[H, W]``) labeled ``class_index`` as a new correction of ``frame``."""
        if not 0 <= class_index < NO_CORRECTION or (self.num_classes is not None and class_index >= self.num_classes):
            raise ValueError(f"class index {class_index} is not a class of this scene")
        if not region.any():
            raise ValueError("the correction region is empty")
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc)
        correction = Correction(
            id=f"{len(self.corrections):04d}_{now.strftime('%Y%m%dT%H%M%S%f')}_{frame}",
            frame=frame,
            class_index=int(class_index),
            class_name=class_name,
            click_xy=(int(click_xy[0]), int(click_xy[1])),
            width=int(region.shape[1]),
            height=int(region.shape[0]),
            camera=camera,
            region=region_method,
            source=source,
            timestamp=now.isoformat(),
        )
        labels = np.where(region, np.uint8(class_index), np.uint8(NO_CORRECTION)).astype(np.uint8)
        png = self.directory / correction.file_name
        write_atomic(png, lambda temp: Image.fromarray(labels, mode="L").save(temp, format="PNG"))
        self._write_manifest([*self.corrections, correction])
        self.corrections.append(correction)
        return correction

    def undo_last(self) -> Correction | None:
        """Remove the newest correction from the manifest, then its label map; None when there is none."""
        if not self.corrections:
            return None
        last = self.corrections[-1]
        self._write_manifest(self.corrections[:-1])
        self.corrections.pop()
        (self.directory / last.file_name).unlink(missing_ok=True)
        return last


@dataclass
class RegionConfig:
    """How a click becomes a labeled region."""

    tolerance: float = 0.06
    """Flood fill: largest distance to the clicked pixel's descriptor that still joins the region."""
    colour_weight: float = 1.0
    """Weight of the rendered RGB distance (Euclidean, RGB in [0, 1]) in the descriptor distance."""
    probability_weight: float = 0.25
    """Weight of the class-probability distance (Euclidean between softmax vectors, at most sqrt(2))."""
    max_area_fraction: float = 0.2
    """Largest region, as a fraction of the image; the tolerance is halved until the region fits."""
    min_radius: int = 1
    """The region always contains this disk around the click (a click on a single outlier pixel still labels)."""
    sam2_checkpoint: Path | None = None
    """Local SAM2 checkpoint: when set, a SAM2 point prompt on the rendered image gives the region instead."""
    sam2_config: str | None = None
    """Packaged SAM2 config name (None: inferred from the checkpoint's file name)."""
    sam2_image_size: int | None = None
    """SAM2 input resolution override (None: the config's)."""
