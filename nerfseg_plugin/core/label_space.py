"""The label space of a scene: class names, display colours and the ignore index (``classes.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.scene_io import read_json

DEFAULT_IGNORE_INDEX = 255


@dataclass(frozen=True)
class SemanticClass:
    """One class: its name and its display colour (8-bit RGB)."""

    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class LabelSpace:
    """Ordered classes (class index = position) plus the label value that means "void / unlabeled"."""

    classes: tuple[SemanticClass, ...]
    ignore_index: int = DEFAULT_IGNORE_INDEX

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("a label space needs at least one class")
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names: {duplicates}")
        if 0 <= self.ignore_index < len(self.classes):
            raise ValueError(f"ignore_index {self.ignore_index} collides with class '{names[self.ignore_index]}'")
        if len(self.classes) > 255:
            raise ValueError(f"{len(self.classes)} classes do not fit 8-bit label maps (at most 255)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors_uint8(self) -> np.ndarray:
        """``[num_classes, 3]`` uint8 display colours."""
        return np.asarray([c.color for c in self.classes], dtype=np.uint8).reshape(-1, 3)

    def to_dict(self) -> dict:
        return {
            "ignore_index": self.ignore_index,
            "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes],
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object, source: Path | str = "<classes>") -> LabelSpace:
        """Validate and build; every problem is reported as a SceneFormatError naming ``source``."""
        if not isinstance(data, dict):
            raise SceneFormatError(source, "expected a JSON object with 'classes' and 'ignore_index'")
        entries = data.get("classes")
        if not isinstance(entries, list) or not entries:
            raise SceneFormatError(source, "'classes' must be a non-empty list of {'name', 'color'} objects")
        ignore_index = data.get("ignore_index", DEFAULT_IGNORE_INDEX)
        if not isinstance(ignore_index, int) or isinstance(ignore_index, bool) or not 0 <= ignore_index <= 255:
            raise SceneFormatError(source, f"'ignore_index' must be an integer in [0, 255], got {ignore_index!r}")
        classes = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
                raise SceneFormatError(source, f"class {i} needs a non-empty string 'name', got {entry!r}")
            color = entry.get("color")
            if (
                not isinstance(color, list | tuple)
                or len(color) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)
            ):
                raise SceneFormatError(source, f"class {i} ('{entry['name']}') needs 'color' as 3 integers 0-255")
            classes.append(SemanticClass(name=entry["name"], color=(color[0], color[1], color[2])))
        try:
            return cls(classes=tuple(classes), ignore_index=ignore_index)
        except ValueError as err:
            raise SceneFormatError(source, str(err)) from None

    @classmethod
    def load(cls, path: Path) -> LabelSpace:
        data = read_json(path, "classes.json", missing="it lists the class names and colours")
        return cls.from_dict(data, source=path)


def class_attributes(classes_json: Path | None, key: str) -> dict[int, object]:
    """``{class index: value}`` of an optional per-class key in classes.json (``"asprs"``, ``"vertical"``), for the
    classes that carry it; empty without the file. The caller checks the values' type."""
    if classes_json is None or not classes_json.is_file():
        return {}
    entries = json.loads(classes_json.read_text(encoding="utf-8")).get("classes", [])
    return {i: entry[key] for i, entry in enumerate(entries) if isinstance(entry, dict) and key in entry}
