"""The boundary mask B of paper 002 (eq. 10: the pseudo-label loss is CE(S_all * B, S_p * B)).

Paper 002 calls B the "boundary regions lacking supervision": parts of the scene outside the common field of view of
the few labeled views (its Fig. 3). Concretely, here:

- ``unobserved``: B holds the pixels whose surface point (from the view's depth) passes the visibility check of no
  labeled view: outside every labeled image, occluded in all of them, or of unknown depth. Connected specks smaller
  than ``min_region`` pixels are dropped (depth noise inside well observed areas), then B grows by ``margin`` pixels
  so it also covers the seam where observed and unobserved surfaces meet.
- ``all``: B is the whole image (the pseudo-label applies wherever it exists).

``auto`` uses ``unobserved`` for the methods that can label unobserved pixels (``sam2``: 2D tracking; ``sam2+vote``:
regions extend votes to their unvoted pixels) and ``all`` for ``vote``, whose labels exist only where a labeled view
observes the point, so ``unobserved`` would leave it nothing. Without any geometry, B is the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Bool
from scipy import ndimage

BoundaryKind = Literal["auto", "unobserved", "all"]


@dataclass
class BoundaryConfig:
    """Where pseudo-labels apply (the boundary mask B; see nerfseg_plugin.pseudolabels.boundary)."""

    kind: BoundaryKind = "auto"
    """unobserved: pixels no labeled view observes; all: every pixel; auto: unobserved for sam2 and sam2+vote,
    all for vote."""
    min_region: int = 16
    """Unobserved connected regions smaller than this many pixels are not part of B."""
    margin: int = 2
    """B grows by this many pixels into the observed area."""


def resolve_boundary_kind(kind: BoundaryKind, method: str) -> Literal["unobserved", "all"]:
    if kind != "auto":
        return kind
    return "all" if method == "vote" else "unobserved"


def boundary_mask(
    observed: Bool[np.ndarray, "h w"] | None,
    shape: tuple[int, int],
    kind: Literal["unobserved", "all"],
    config: BoundaryConfig,
) -> Bool[np.ndarray, "h w"]:
    """B for one view from its labeled-view visibility (None: no geometry, B is the whole image)."""
    if observed is None or kind == "all":
        return np.ones(shape, dtype=bool)
    unobserved = ~observed
    components, count = ndimage.label(unobserved)
    if count:
        sizes = np.bincount(components.reshape(-1), minlength=count + 1)
        large = sizes >= config.min_region
        large[0] = False
        unobserved = large[components]
    if config.margin > 0 and unobserved.any():
        unobserved = ndimage.binary_dilation(unobserved, iterations=config.margin)
    return unobserved
