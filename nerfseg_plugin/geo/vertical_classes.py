"""Classes of vertical surfaces, which a true orthophoto shows no area of (``building_wall``, facades).

A straight-down render still meets them: splats on a facade have a footprint on the ground beside the building, and a
label map trained on oblique photos names them. In a top-down product that footprint belongs to what lies under or
beside the wall, so the label ortho takes each pixel's best non-vertical class there. The 3D point cloud keeps them.

A class is vertical when classes.json says so (``"vertical": true``, or ``false`` to keep a class that the name rule
would take) or, without that key, when a word of its name is one of :data:`VERTICAL_WORDS`.
"""

from __future__ import annotations

import re
from pathlib import Path

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.label_space import class_attributes

VERTICAL_WORDS = frozenset({"wall", "walls", "facade", "facades"})


def is_vertical_name(name: str) -> bool:
    return any(word in VERTICAL_WORDS for word in re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_").split("_"))


def vertical_classes(class_names: list[str], classes_json: Path | None = None) -> list[int]:
    """Indices of the vertical classes: classes.json's ``vertical`` where given, else by name."""
    explicit = class_attributes(classes_json, "vertical")
    for index, value in explicit.items():
        if not isinstance(value, bool):
            raise SceneFormatError(classes_json, f"class {index}: 'vertical' must be true or false")
    indices = [i for i, name in enumerate(class_names) if explicit.get(i, is_vertical_name(name))]
    if len(indices) == len(class_names):
        where = classes_json if classes_json is not None else "<classes>"
        raise SceneFormatError(where, "every class is vertical: a label ortho needs at least one other class")
    return indices


def resolve_vertical_classes(
    requested: tuple[str, ...] | None, class_names: list[str], classes_json: Path | None
) -> list[int]:
    """``requested`` names (``None``: the classes.json / name rule; empty: none) as class indices."""
    if requested is None:
        return vertical_classes(class_names, classes_json)
    unknown = [name for name in requested if name not in class_names]
    if unknown:
        raise ValueError(f"--vertical-classes: unknown classes {unknown}; the scene's classes are {class_names}")
    indices = sorted({class_names.index(name) for name in requested})
    if len(indices) == len(class_names):
        raise ValueError("--vertical-classes: every class is listed; a label ortho needs at least one other class")
    return indices
