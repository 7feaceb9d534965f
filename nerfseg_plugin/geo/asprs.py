"""ASPRS LAS classification codes for a scene's classes (LAS 1.4 R15, table 17).

A class may carry its code in classes.json (``"asprs": 6``); otherwise it is picked from the class name, first as a
whole and then by its words (``building_wall`` -> building, ``road_marking`` -> road). Classes with no standard
meaning get user-definable codes from 64 up, in class order.
"""

from __future__ import annotations

import re
from pathlib import Path

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.core.label_space import class_attributes

USER_CODES_START = 64
NAME_CODES = {
    "ground": 2,
    "terrain": 2,
    "bare_earth": 2,
    "soil": 2,
    "low_vegetation": 3,
    "grass": 3,
    "lawn": 3,
    "medium_vegetation": 4,
    "shrub": 4,
    "high_vegetation": 5,
    "vegetation": 5,
    "tree": 5,
    "trees": 5,
    "forest": 5,
    "building": 6,
    "buildings": 6,
    "roof": 6,
    "wall": 6,
    "water": 9,
    "river": 9,
    "lake": 9,
    "rail": 10,
    "railway": 10,
    "road": 11,
    "street": 11,
    "bridge": 17,
}


def default_code(name: str) -> int | None:
    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if key in NAME_CODES:
        return NAME_CODES[key]
    for word in key.split("_"):
        if word in NAME_CODES:
            return NAME_CODES[word]
    return None


def asprs_codes(class_names: list[str], classes_json: Path | None = None) -> list[int]:
    """One code per class: classes.json's ``asprs`` where given, else by name, else 64, 65, ..."""
    explicit = class_attributes(classes_json, "asprs")
    for index, code in explicit.items():
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 255:
            raise SceneFormatError(classes_json, f"class {index}: 'asprs' must be an integer 0-255")
    codes, next_user = [], USER_CODES_START
    for index, name in enumerate(class_names):
        code = explicit.get(index, default_code(name))
        if code is None:
            code, next_user = next_user, next_user + 1
        codes.append(code)
    return codes
