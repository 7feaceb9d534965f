"""Sequential matching in capture order: which photo pairs to compare when there is no GPS to find neighbours.

COLMAP's sequential pairing takes the photos in file-name order, which is the flight order only when the camera
names files by a counter. Survey photos merged from several cards or renamed by a tool are not; their EXIF capture
time still is. When every photo has one, the pairs follow COLMAP's sequential rule over the capture order instead
(and are matched as imported pairs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.process.exif import PhotoExif


def capture_order(names: Sequence[str], exif: Mapping[str, PhotoExif]) -> list[str] | None:
    """The photos sorted by EXIF capture time (equal times keep file-name order), or None when a photo has none."""
    times = {name: exif[name].capture_time if name in exif else None for name in names}
    if not names or any(moment is None for moment in times.values()):
        return None
    return sorted(names, key=lambda name: (times[name], name))


def sequential_pairs(order: Sequence[str], overlap: int, quadratic: bool = True) -> list[tuple[str, str]]:
    """COLMAP's sequential pairs over ``order``: each photo with its next ``overlap`` photos and, with
    ``quadratic``, with the photos 2, 4, 8, ... (``overlap`` powers of two) ahead."""
    pairs: dict[tuple[str, str], None] = {}
    steps = sorted({*range(1, overlap + 1), *((1 << i) for i in range(overlap) if quadratic)})
    for index, name in enumerate(order):
        for step in steps:
            if index + step >= len(order):
                break
            pairs[(name, order[index + step])] = None
    return list(pairs)


def write_pairs(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    """The pairs as COLMAP's match list (one ``name1 name2`` line per pair)."""
    spaced = sorted({name for pair in pairs for name in pair if " " in name})
    if spaced:
        raise SceneFormatError(
            spaced[0],
            "a photo name with a space cannot go into COLMAP's match list: rename the photos or use "
            "--matching exhaustive",
        )
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs), encoding="utf-8")
    return path
