"""Names shared across layers: batch keys of the semantic supervision and the dataparser's metadata key."""

from __future__ import annotations

SEMANTICS_METADATA_KEY = "semantics"
"""Key of :class:`~nerfseg_plugin.data.dataparser.SemanticFrames` in ``DataparserOutputs.metadata``."""
NO_CORRECTION = 255
"""Value of a correction label map outside its corrected region (``nerfseg_plugin.data.corrections``)."""
SEMANTIC_LABELS = "semantic_labels"
"""Supervision labels ``[H, W]`` uint8 on train frames (ignore index where unlabeled; losses call ``.long()``)."""
SEMANTIC_GT = "semantic_gt"
"""Evaluation ground truth ``[H, W]`` uint8, only on val/test frames."""
PSEUDO_LABELS = "pseudo_labels"
"""Pseudo-labels ``[H, W]`` uint8 (ignore index where none), train frames without real labels only."""
PSEUDO_WEIGHTS = "pseudo_weights"
"""``[H, W]`` float32 per-pixel pseudo-label weight (confidence inside the boundary mask B, else 0)."""
SEMANTIC_BATCH_KEYS = (SEMANTIC_LABELS, SEMANTIC_GT, PSEUDO_LABELS, PSEUDO_WEIGHTS)
"""Every per-pixel semantic key a batch can carry (moved to the device along with the image)."""
