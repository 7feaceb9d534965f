"""pycolmap stages: SIFT extraction, pair matching and incremental mapping, plus the registration check."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerfseg_plugin.process.config import CAMERA_MODEL_NUM_PARAMS, ProcessDataConfig
from nerfseg_plugin.process.labels import ProcessingInputs
from nerfseg_plugin.process.pairs import capture_order, sequential_pairs, write_pairs


class RegistrationError(RuntimeError):
    """SfM posed too few photos (or none with a training label) for a usable scene."""


@dataclass
class SfmResult:
    """The reconstruction kept (the largest model) and which photos it posed."""

    reconstruction: Any
    """pycolmap.Reconstruction"""
    registered: list[str]
    failed: list[str]
    num_models: int


def select_device(use_gpu: str) -> Any:
    """pycolmap.Device for SIFT: CUDA only when asked for (or auto) and pycolmap was built with it."""
    import pycolmap

    if use_gpu == "on" and not pycolmap.has_cuda:
        raise ValueError("--use-gpu on, but this pycolmap build has no CUDA support; use --use-gpu auto or off")
    return pycolmap.Device.cuda if use_gpu != "off" and pycolmap.has_cuda else pycolmap.Device.cpu


def matching_method(config: ProcessDataConfig, num_images: int, num_with_gps: int = 0) -> str:
    """The --matching choice; auto: spatial (GPS neighbours) when every photo has GPS, else by photo count."""
    if config.matching != "auto":
        if config.matching == "spatial" and num_with_gps < num_images:
            raise ValueError(
                f"--matching spatial needs EXIF GPS on every photo, but {num_images - num_with_gps} of {num_images} "
                "have none; use --matching exhaustive or sequential"
            )
        return config.matching
    if num_images > 0 and num_with_gps == num_images:
        return "spatial"
    return "exhaustive" if num_images <= config.exhaustive_max_images else "sequential"


def _camera_params(config: ProcessDataConfig) -> str:
    """COLMAP parameter string of the known intrinsics (distortion starts at zero), or "" to let COLMAP guess."""
    if config.known_intrinsics is None:
        return ""
    fx, fy, cx, cy = config.known_intrinsics
    focal = [fx] if config.camera_model.startswith("SIMPLE_") else [fx, fy]
    params = [*focal, cx, cy]
    params += [0.0] * (CAMERA_MODEL_NUM_PARAMS[config.camera_model] - len(params))
    return ",".join(repr(float(p)) for p in params)


def extract_features(config: ProcessDataConfig, inputs: ProcessingInputs, database: Path, device: Any) -> None:
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    reader.camera_params = _camera_params(config)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = config.num_threads
    extraction.use_gpu = device == pycolmap.Device.cuda
    extraction.sift.max_num_features = config.max_num_features
    extraction.max_image_size = config.sift_max_image_size  # SIFT on a bounded size: time and memory per photo
    pycolmap.extract_features(
        database,
        inputs.image_dir,
        image_names=inputs.image_names,
        camera_mode=pycolmap.CameraMode.SINGLE if config.single_camera else pycolmap.CameraMode.AUTO,
        reader_options=reader,
        extraction_options=extraction,
        device=device,
    )


def match_features(
    config: ProcessDataConfig, inputs: ProcessingInputs, database: Path, method: str, device: Any
) -> str:
    """Stage 3: verified matches of the photo pairs the method chooses (``sequential`` in capture order when every
    photo has an EXIF capture time, else in file-name order); returns what the pairs were, for the stage line."""
    import pycolmap

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    matching.use_gpu = device == pycolmap.Device.cuda
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = config.seed
    if method == "exhaustive":
        pycolmap.match_exhaustive(database, matching, verification_options=verification, device=device)
        return "every pair"
    elif method == "spatial":
        # Neighbours by the EXIF GPS that feature extraction stored as pose priors.
        pairing = pycolmap.SpatialPairingOptions()
        pairing.max_num_neighbors = config.spatial_max_neighbors
        pairing.max_distance = 1e5  # the neighbour count bounds the pairs; footprints of high flights exceed 100 m
        pairing.num_threads = config.num_threads
        pycolmap.match_spatial(database, matching, pairing, verification, device=device)
        return f"up to {config.spatial_max_neighbors} GPS neighbours per photo"
    elif (order := capture_order(inputs.image_names, inputs.exif)) is not None:
        # Sequential in capture order (file names need not follow the flight); no loop detection (see below).
        pairing = pycolmap.ImportedPairingOptions()
        pairs = sequential_pairs(order, config.sequential_overlap)
        pairing.match_list_path = str(write_pairs(database.parent / "sequential_pairs.txt", pairs))
        pycolmap.match_image_pairs(database, matching, pairing, verification, device=device)
        return f"{len(pairs)} pairs in capture-time order"
    else:
        # No loop detection: it needs a vocabulary tree, which would have to be downloaded.
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = config.sequential_overlap
        pairing.quadratic_overlap = True
        pycolmap.match_sequential(database, matching, pairing, verification, device=device)
        return "file-name order (not every photo has an EXIF capture time)"


def reconstruct(config: ProcessDataConfig, inputs: ProcessingInputs, database: Path, sparse_dir: Path) -> SfmResult:
    """Incremental mapping; keeps the largest model and reports the photos it did not pose."""
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = config.num_threads
    options.random_seed = config.seed
    # COLMAP drops models under 10 photos; small captures would then end with nothing to report on.
    options.min_model_size = max(3, min(options.min_model_size, len(inputs.image_names) // 2))
    if config.known_intrinsics is not None:
        options.ba_refine_focal_length = False
        options.ba_refine_principal_point = False
        options.mapper.abs_pose_refine_focal_length = False
    sparse_dir.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(database, inputs.image_dir, sparse_dir, options=options)
    if not models:
        return SfmResult(None, [], list(inputs.image_names), 0)
    reconstruction = max(models.values(), key=lambda model: model.num_reg_images())
    registered = sorted(reconstruction.images[i].name for i in reconstruction.reg_image_ids())
    failed = sorted(set(inputs.image_names) - set(registered))
    return SfmResult(reconstruction, registered, failed, len(models))


def _name_list(names: list[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_registration(config: ProcessDataConfig, inputs: ProcessingInputs, result: SfmResult, method: str) -> None:
    """Raise RegistrationError when too few photos (or no training-labeled photo) were posed."""
    total = len(inputs.image_names)
    needed = math.ceil(config.min_registered_share * total - 1e-9)
    if len(result.registered) < needed:
        split = (
            f" The photos split into {result.num_models} separate models; only the largest is kept."
            if result.num_models > 1
            else ""
        )
        other = "sequential" if method == "exhaustive" else "exhaustive"
        raise RegistrationError(
            f"only {len(result.registered)} of {total} photos ({len(result.registered) / total:.0%}) registered, "
            f"fewer than --min-registered-share {config.min_registered_share:g} ({needed} photos).{split}\n"
            f"Not registered: {_name_list(result.failed)}.\n"
            f"Things to try: --matching {other} (matching was {method}); photos with more overlap (60-80% between "
            "neighbours) and sharp, well-textured content; removing photos of other places; or a lower "
            "--min-registered-share to keep the photos that did register."
        )
    if not set(inputs.supervision) & set(result.registered):
        raise RegistrationError(
            f"none of the photos with training labels registered ({_name_list(sorted(inputs.supervision))}); "
            "label photos that overlap well with the others"
        )
