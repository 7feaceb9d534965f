"""Georeferencing an SfM reconstruction from the photos' EXIF GPS: a robust similarity to a metric projected CRS.

SfM recovers the scene up to an unknown similarity (rotation, translation, scale). The GPS of each registered
photo gives its camera centre in the CRS with metre-level noise, so a RANSAC over 3-camera samples (Umeyama's
closed form) finds the inliers and a least-squares fit over all inliers gives the similarity. The scene is then
written in metres with z up, shifted by a whole-metre local origin so that float32 keeps centimetres:
``scene_to_crs`` is that shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerfseg_plugin.process.exif import GpsPosition

MIN_GPS_PHOTOS = 3


class GeoreferenceError(ValueError):
    """The GPS cannot fix the scene's similarity (too few positions, collinear cameras, no consistent fit)."""


@dataclass(frozen=True)
class SimilarityFit:
    """``target ~ scale * rotation @ source + translation`` over the inliers."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    inliers: np.ndarray
    """bool per correspondence"""
    residual_rms: float
    """RMS distance (target units) between the mapped inlier sources and their targets."""

    @property
    def matrix(self) -> np.ndarray:
        matrix = np.eye(4)
        matrix[:3, :3] = self.scale * self.rotation
        matrix[:3, 3] = self.translation
        return matrix

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, rotation, translation) mapping ``source [N, 3]`` onto ``target [N, 3]``
    (Umeyama 1991; reflections excluded)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rotation = u @ sign @ vt
    variance = (source_c**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    return scale, rotation, target_mean - scale * rotation @ source_mean


def _residuals(source: np.ndarray, target: np.ndarray, scale: float, rotation: np.ndarray, translation) -> np.ndarray:
    return np.linalg.norm(scale * source @ rotation.T + translation - target, axis=1)


def check_spread(source: np.ndarray, what: str) -> None:
    """Collinear (or coincident) centres leave the rotation about their line free."""
    centred = source - source.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[0] <= 0 or singular[1] < 0.02 * singular[0]:
        raise GeoreferenceError(
            f"the {what} lie (nearly) on one line, which leaves the rotation about it undetermined; "
            "georeferencing needs a 2-D flight pattern (or ground control points with --gcp)"
        )


def fit_similarity(
    source: np.ndarray, target: np.ndarray, inlier_threshold: float, iterations: int = 2000, seed: int = 0
) -> SimilarityFit:
    """RANSAC + least squares similarity from ``source`` to ``target`` (both ``[N, 3]``, N >= 3).

    A correspondence is an inlier when the fit maps it within ``inlier_threshold`` of its target. The model with
    most inliers is refitted on them until the inlier set stops changing."""
    count = len(source)
    if count < MIN_GPS_PHOTOS:
        raise GeoreferenceError(f"{count} correspondences; a similarity needs at least {MIN_GPS_PHOTOS}")
    rng = np.random.default_rng(seed)
    best = np.zeros(count, bool)
    for _ in range(iterations if count > MIN_GPS_PHOTOS else 1):
        sample = rng.choice(count, MIN_GPS_PHOTOS, replace=False)
        if np.linalg.matrix_rank(source[sample] - source[sample].mean(0), tol=1e-9) < 2:
            continue
        inliers = _residuals(source, target, *umeyama(source[sample], target[sample])) < inlier_threshold
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < MIN_GPS_PHOTOS:
        raise GeoreferenceError(
            f"no similarity maps even {MIN_GPS_PHOTOS} cameras within {inlier_threshold:g} m of their GPS positions "
            "(check --gps-max-error-m, or the photos' GPS tags)"
        )
    for _ in range(10):
        model = umeyama(source[best], target[best])
        inliers = _residuals(source, target, *model) < inlier_threshold
        if inliers.sum() < MIN_GPS_PHOTOS or np.array_equal(inliers, best):
            break
        best = inliers
    scale, rotation, translation = umeyama(source[best], target[best])
    rms = float(np.sqrt(np.mean(_residuals(source[best], target[best], scale, rotation, translation) ** 2)))
    return SimilarityFit(scale, rotation, translation, best, rms)


def utm_crs_for(latitude: float, longitude: float) -> str:
    """ "EPSG:326xx" / "EPSG:327xx": the WGS 84 UTM zone containing the point (pyproj's CRS database)."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    found = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(longitude, latitude, longitude, latitude)
    )
    if not found:
        raise GeoreferenceError(f"no UTM zone covers latitude {latitude}, longitude {longitude}")
    return f"{found[0].auth_name}:{found[0].code}"


def pick_crs(positions: list[GpsPosition], requested: str | None) -> str:
    """The requested CRS (must be projected, in metres) or the UTM zone of the positions' mean."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if requested is None:
        return utm_crs_for(
            float(np.mean([p.latitude for p in positions])), float(np.mean([p.longitude for p in positions]))
        )
    try:
        crs = CRS.from_user_input(requested)
    except CRSError as err:
        raise GeoreferenceError(f"--crs {requested}: unknown CRS ({err})") from None
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    if not crs.is_projected or unit not in ("metre", "meter"):
        raise GeoreferenceError(f"--crs {requested} is not a projected CRS in metres (its unit is {unit or 'none'})")
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()


def gps_to_crs(positions: list[GpsPosition], crs: str) -> np.ndarray:
    """``[N, 3]`` easting, northing, height (GPS altitude; 0 where a photo has none) in ``crs``."""
    from pyproj import Transformer

    transformer = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    longitudes = np.array([p.longitude for p in positions])
    latitudes = np.array([p.latitude for p in positions])
    easting, northing = transformer.transform(longitudes, latitudes)
    heights = np.array([p.altitude if p.altitude is not None else 0.0 for p in positions])
    return np.stack([easting, northing, heights], -1)


@dataclass(frozen=True)
class Georeference:
    """How the written scene relates to the CRS: ``crs_point = scene_to_crs @ scene_point`` (homogeneous)."""

    crs: str
    scene_to_crs: np.ndarray
    source: str
    num_inliers: int
    residual_rms_m: float
    sfm_to_scene: np.ndarray
    """Similarity applied to the SfM reconstruction to get the scene frame."""

    def to_json(self) -> dict:
        return {
            "crs": self.crs,
            "scene_to_crs": self.scene_to_crs.tolist(),
            "source": self.source,
            "num_inliers": self.num_inliers,
            "residual_rms_m": round(self.residual_rms_m, 4),
        }


def georeference_from_correspondences(
    sfm_points: np.ndarray, crs_points: np.ndarray, crs: str, source: str, inlier_threshold: float, seed: int
) -> Georeference:
    """Fit SfM -> CRS, then split it into SfM -> scene (metric, z up) and a whole-metre shift scene -> CRS."""
    check_spread(sfm_points, "camera centres" if source == "exif-gps" else "ground control points")
    fit = fit_similarity(sfm_points, crs_points, inlier_threshold, seed=seed)
    origin = np.round(crs_points[fit.inliers].mean(0))
    origin[2] = 0.0  # heights stay absolute: they are small numbers already
    scene_to_crs = np.eye(4)
    scene_to_crs[:3, 3] = origin
    sfm_to_scene = fit.matrix
    sfm_to_scene[:3, 3] -= origin
    return Georeference(crs, scene_to_crs, source, int(fit.inliers.sum()), fit.residual_rms, sfm_to_scene)


def apply_to_reconstruction(reconstruction, sfm_to_scene: np.ndarray) -> None:
    """Move cameras and points of a pycolmap reconstruction into the scene frame (in place)."""
    import pycolmap

    scale = float(np.cbrt(np.linalg.det(sfm_to_scene[:3, :3])))
    rotation = sfm_to_scene[:3, :3] / scale
    reconstruction.transform(pycolmap.Sim3d(scale, pycolmap.Rotation3d(rotation), sfm_to_scene[:3, 3]))


def georeference_reconstruction(config, inputs, result) -> Georeference | None:
    """Fit the scene's georeference from ground control points (--gcp) or the registered photos' EXIF GPS and
    move the reconstruction into the metric scene frame; None when there is nothing to fit (or it is off).

    ``config``: ProcessDataConfig, ``inputs``: ProcessingInputs, ``result``: SfmResult."""
    if config.georeference == "off":
        return None
    reconstruction = result.reconstruction
    if config.gcp is not None:
        from nerfseg_plugin.process.gcp import gcp_correspondences

        sfm_points, crs_points, crs = gcp_correspondences(config.gcp, reconstruction, config.crs)
        source = "gcp"
    else:
        registered = {reconstruction.images[i].name: reconstruction.images[i] for i in reconstruction.reg_image_ids()}
        names = [name for name in inputs.gps_names if name in registered]
        if len(names) < MIN_GPS_PHOTOS:
            return None
        positions = [inputs.exif[name].gps for name in names]
        crs = pick_crs(positions, config.crs)
        crs_points = gps_to_crs(positions, crs)
        sfm_points = np.array([registered[name].projection_center() for name in names])
        source = "exif-gps"
    georeference = georeference_from_correspondences(
        sfm_points, crs_points, crs, source, config.gps_max_error_m, config.seed
    )
    apply_to_reconstruction(reconstruction, georeference.sfm_to_scene)
    return georeference
