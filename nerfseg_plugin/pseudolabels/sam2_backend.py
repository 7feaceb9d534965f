"""SAM2 behind the MaskGenerator / MaskPropagator protocols of nerfseg_plugin.pseudolabels.assignment.

sam2 is imported lazily (it initialises hydra on import). Models are built from sam2's packaged configs without
weights, then the local checkpoint is loaded with ``torch.load(..., weights_only=True)``: nothing is fetched from a
hub. One SAM2VideoPredictor serves both the automatic mask generator and the video propagation (same weights).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from PIL import Image


class Sam2CheckpointError(RuntimeError):
    """A SAM2 checkpoint or config that cannot be used; names the file and the problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Sam2Config:
    """SAM2 automatic masks and video propagation."""

    points_per_side: int = 32
    """Automatic mask generator: point prompts per image side."""
    points_per_batch: int = 64
    """Automatic mask generator: point prompts decoded at once."""
    pred_iou_thresh: float = 0.8
    """Automatic mask generator: minimum predicted mask IoU."""
    stability_score_thresh: float = 0.92
    """Automatic mask generator: minimum mask stability score."""
    box_nms_thresh: float = 0.7
    """Automatic mask generator: box IoU above which duplicate masks are suppressed."""
    propagation_window: int | None = None
    """Track each labeled view's instances at most this many frames in each direction (None: the whole capture,
    as in paper 002)."""
    image_size: int | None = None
    """Override the model's input resolution (None: the config's, 1024). Smaller is much faster on CPU but
    degrades pretrained checkpoints; a multiple of 64."""
    jpeg_quality: int = 95
    """Quality of the temporary JPEG frames SAM2's video predictor reads."""


def _device(device: torch.device | str | None = None) -> torch.device:
    """``device`` when given (the caller's pipeline device), else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def packaged_config_names() -> list[str]:
    """Config names sam2 ships (as hydra expects them, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``)."""
    spec = importlib.util.find_spec("sam2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("sam2 is not installed: pip install sam2==1.1.0")
    root = Path(spec.origin).parent
    return sorted(str(path.relative_to(root)) for path in (root / "configs").rglob("*.yaml"))


def resolve_config_name(config: str | None, checkpoint: Path) -> str:
    """The packaged config for ``config`` (a full name, a file name, or a stem like ``sam2.1_hiera_t``); when None,
    inferred from the official checkpoint file names (``sam2.1_hiera_tiny.pt`` -> ``sam2.1_hiera_t``)."""
    names = packaged_config_names()
    if config is None:
        from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

        by_checkpoint = {ckpt: cfg for cfg, ckpt in HF_MODEL_ID_TO_FILENAMES.values()}
        if checkpoint.name not in by_checkpoint:
            raise Sam2CheckpointError(
                checkpoint,
                "cannot infer the SAM2 config from this file name; pass --sam2-config (one of "
                f"{[Path(n).stem for n in names if '/sam2' in n and 'training' not in n]})",
            )
        return by_checkpoint[checkpoint.name]
    stem = Path(config).name.removesuffix(".yaml")
    matches = [name for name in names if name == config or Path(name).stem == stem]
    if not matches:
        choices = [Path(name).stem for name in names]
        raise Sam2CheckpointError(config, f"no such packaged SAM2 config; choose one of {choices}")
    return matches[0]


def load_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local SAM2 checkpoint (the official ``{"model": state_dict}`` layout or a bare state dict)."""
    if not checkpoint.is_file():
        raise Sam2CheckpointError(
            checkpoint,
            "SAM2 checkpoint not found. Download one (e.g. sam2.1_hiera_tiny.pt from "
            "https://github.com/facebookresearch/sam2#download-checkpoints) and pass its local path",
        )
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors alike
        problem = f"not a loadable PyTorch checkpoint ({type(err).__name__}: {err})"
        raise Sam2CheckpointError(checkpoint, problem) from None
    state = payload.get("model", payload) if isinstance(payload, dict) else payload
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Sam2CheckpointError(checkpoint, "expected a SAM2 state dict (or {'model': state_dict})")
    return state


def build_sam2_predictor(
    config_name: str, checkpoint: Path, image_size: int | None = None, device: torch.device | str | None = None
) -> torch.nn.Module:
    """SAM2VideoPredictor from a packaged config, weights from ``checkpoint``, on ``device`` (None: CUDA when
    present, else the CPU); a checkpoint of another architecture raises Sam2CheckpointError listing the mismatch."""
    state = load_state_dict(checkpoint)
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [
        # sam2's own video post-processing, except hole filling: that needs its optional CUDA extension.
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        f"++model.fill_hole_area={8 if importlib.util.find_spec('sam2._C') is not None else 0}",
    ]
    if image_size is not None:
        overrides.append(f"++model.image_size={image_size}")
    model = build_sam2_video_predictor(
        config_name, ckpt_path=None, device="cpu", apply_postprocessing=False, hydra_overrides_extra=overrides
    )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even when not strict
        raise Sam2CheckpointError(checkpoint, f"does not fit SAM2 config {config_name}: {err}") from None
    if missing or unexpected:
        raise Sam2CheckpointError(
            checkpoint,
            f"does not fit SAM2 config {config_name}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); pass the --sam2-config this checkpoint "
            "was trained with (e.g. sam2.1_hiera_t for sam2.1_hiera_tiny.pt)",
        )
    return model.to(_device(device)).eval()


class Sam2MaskGenerator:
    """SAM2AutomaticMaskGenerator as a MaskGenerator."""

    def __init__(self, model: torch.nn.Module, config: Sam2Config) -> None:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        self.generator = SAM2AutomaticMaskGenerator(
            model,
            points_per_side=config.points_per_side,
            points_per_batch=config.points_per_batch,
            pred_iou_thresh=config.pred_iou_thresh,
            stability_score_thresh=config.stability_score_thresh,
            box_nms_thresh=config.box_nms_thresh,
            min_mask_region_area=0,  # > 0 needs OpenCV and sam2's CUDA extension
        )
        size = model.image_size
        # SAM2ImagePredictor hard-codes the backbone feature sizes of a 1024 input.
        self.generator.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]

    def __call__(self, image: UInt8[np.ndarray, "h w 3"]) -> list[Bool[np.ndarray, "h w"]]:
        with torch.inference_mode():
            return [np.asarray(record["segmentation"], dtype=bool) for record in self.generator.generate(image)]


class Sam2Propagator:
    """SAM2VideoPredictor as a MaskPropagator: the frames (a window around ``start``) are written as ``<i>.jpg``
    into a temporary folder, every mask becomes an object prompt on ``start``, then tracking runs forward and
    backward (``reverse=True``) from there."""

    def __init__(self, model: torch.nn.Module, config: Sam2Config) -> None:
        self.model, self.config = model, config

    def __call__(
        self, frames: Sequence[UInt8[np.ndarray, "h w 3"]], start: int, masks: Sequence[Bool[np.ndarray, "h w"]]
    ) -> Iterator[tuple[int, Float[np.ndarray, "n h w"]]]:
        window = self.config.propagation_window
        first = 0 if window is None else max(0, start - window)
        last = len(frames) - 1 if window is None else min(len(frames) - 1, start + window)
        with tempfile.TemporaryDirectory(prefix="nerfseg-sam2-frames-") as folder:
            for offset, index in enumerate(range(first, last + 1)):
                Image.fromarray(frames[index]).save(Path(folder) / f"{offset}.jpg", quality=self.config.jpeg_quality)
            with torch.inference_mode():
                state = self.model.init_state(video_path=folder, offload_video_to_cpu=True)
                for obj_id, mask in enumerate(masks):
                    self.model.add_new_mask(state, frame_idx=start - first, obj_id=obj_id, mask=torch.from_numpy(mask))
                seen: set[int] = set()
                for reverse in (False, True):
                    for offset, _, logits in self.model.propagate_in_video(
                        state, start_frame_idx=start - first, reverse=reverse
                    ):
                        if offset in seen:  # the prompted frame comes back in both directions
                            continue
                        seen.add(offset)
                        yield first + offset, torch.sigmoid(logits[:, 0].float()).cpu().numpy()
