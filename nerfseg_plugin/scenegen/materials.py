"""The generator's label space and the surface materials that map onto it.

A material is finer than a class: it picks the procedural texture (grass and soil are both ``terrain``, a flat
membrane roof and a tiled pitched roof are both ``roof``), so several materials share a class and, by design, several
classes share colours.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from nerfseg_plugin.core.label_space import LabelSpace, SemanticClass

SCENE_LABEL_SPACE = LabelSpace(
    classes=(
        SemanticClass("road", (128, 64, 128)),
        SemanticClass("sidewalk", (244, 35, 232)),
        SemanticClass("road_marking", (255, 255, 255)),
        SemanticClass("parking", (250, 170, 160)),
        SemanticClass("terrain", (152, 251, 152)),
        SemanticClass("vegetation", (107, 142, 35)),
        SemanticClass("building_wall", (102, 102, 156)),
        SemanticClass("roof", (70, 70, 70)),
        SemanticClass("car", (0, 0, 142)),
        SemanticClass("water", (0, 130, 180)),
    )
)
"""The fixed class list every generated scene writes to ``classes.json`` (Cityscapes-like colours)."""

CLASS_INDEX = {name: index for index, name in enumerate(SCENE_LABEL_SPACE.names)}
IGNORE_LABEL = SCENE_LABEL_SPACE.ignore_index


class Material(IntEnum):
    """Surface materials painted into the town grid; each has its own texture in ``textures.py``."""

    GRASS = 0
    SOIL = 1
    ASPHALT = 2
    MARKING = 3
    MARKING_YELLOW = 4
    SIDEWALK = 5
    PLAZA = 6
    PARKING = 7
    WATER = 8
    TREE = 9
    HEDGE = 10
    WALL = 11
    FLAT_ROOF = 12
    TILED_ROOF = 13
    ROOF_UNIT = 14
    CAR = 15
    FIELD = 16  # farmland beyond the town grid, rendered analytically
    CONCRETE = 17  # bridge decks' sides and quay walls


NO_MATERIAL = 255
"""Marks grid cells that hold no raised object."""

_MATERIAL_CLASS_NAMES = {
    Material.GRASS: "terrain",
    Material.SOIL: "terrain",
    Material.ASPHALT: "road",
    Material.MARKING: "road_marking",
    Material.MARKING_YELLOW: "road_marking",
    Material.SIDEWALK: "sidewalk",
    Material.PLAZA: "sidewalk",
    Material.PARKING: "parking",
    Material.WATER: "water",
    Material.TREE: "vegetation",
    Material.HEDGE: "vegetation",
    Material.WALL: "building_wall",
    Material.FLAT_ROOF: "roof",
    Material.TILED_ROOF: "roof",
    Material.ROOF_UNIT: "roof",
    Material.CAR: "car",
    Material.FIELD: "terrain",
    Material.CONCRETE: "sidewalk",
}

MATERIAL_TO_CLASS = np.full(256, IGNORE_LABEL, dtype=np.uint8)
"""Lookup table: material id -> class index (ignore for ``NO_MATERIAL``)."""
for _material, _name in _MATERIAL_CLASS_NAMES.items():
    MATERIAL_TO_CLASS[_material] = CLASS_INDEX[_name]
