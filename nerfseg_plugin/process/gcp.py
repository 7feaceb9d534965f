"""Ground control points in OpenDroneMap's ``gcp_list.txt`` format, triangulated in the SfM frame.

Format: the first non-comment line is the CRS (``EPSG:32614``, a PROJ string, or ODM's ``WGS84 UTM 14N``); then
one observation per line: ``geo_x geo_y geo_z pixel_x pixel_y image_name [gcp_name]``. Observations of one point
share its name (or, without names, its coordinates). Each point seen in two or more registered photos is
triangulated from their rays; the georeference then maps those points onto their surveyed coordinates.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nerfseg_plugin.core.errors import SceneFormatError

ODM_UTM = re.compile(r"^WGS84\s+UTM\s+(\d{1,2})([NS])$", re.IGNORECASE)


def parse_gcp_crs(line: str, path: Path) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    match = ODM_UTM.match(line.strip())
    if match:
        zone, hemisphere = int(match.group(1)), match.group(2).upper()
        return f"EPSG:{32600 + zone if hemisphere == 'N' else 32700 + zone}"
    try:
        return CRS.from_user_input(line.strip()).to_string()
    except CRSError as err:
        raise SceneFormatError(path, f"first line must name the CRS, got {line.strip()!r} ({err})") from None


def read_gcp_file(path: Path) -> tuple[str, dict[str, tuple[np.ndarray, list[tuple[str, float, float]]]]]:
    """(CRS, {point name: (coordinates [3], [(image name, pixel x, pixel y), ...])})."""
    try:
        lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise SceneFormatError(path, f"unreadable GCP file: {err}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise SceneFormatError(path, "GCP file is empty")
    crs = parse_gcp_crs(lines[0], path)
    points: dict[str, tuple[np.ndarray, list]] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        try:
            coordinates = np.array([float(v) for v in fields[:3]])
            pixel_x, pixel_y = float(fields[3]), float(fields[4])
            image = fields[5]
        except (ValueError, IndexError):
            raise SceneFormatError(path, f"line {number}: expected 'x y z pixel_x pixel_y image [name]'") from None
        name = fields[6] if len(fields) > 6 else " ".join(fields[:3])
        entry = points.setdefault(name, (coordinates, []))
        if not np.allclose(entry[0], coordinates):
            raise SceneFormatError(path, f"line {number}: point {name} has two different coordinates")
        entry[1].append((image, pixel_x, pixel_y))
    return crs, points


def triangulate_rays(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares intersection of rays (the point closest to all of them)."""
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    return np.linalg.solve(projectors.sum(0), (projectors @ origins[:, :, None]).sum(0)[:, 0])


def gcp_correspondences(path: Path, reconstruction, requested_crs: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Triangulated GCPs in the SfM frame ``[M, 3]``, their coordinates in the target CRS ``[M, 3]``, the CRS."""
    from pyproj import CRS, Transformer

    from nerfseg_plugin.process.georeference import MIN_GPS_PHOTOS, GeoreferenceError, pick_crs, utm_crs_for

    gcp_crs, points = read_gcp_file(path)
    images = {reconstruction.images[i].name: reconstruction.images[i] for i in reconstruction.reg_image_ids()}
    if requested_crs is not None:
        crs = pick_crs([], requested_crs)
    elif CRS.from_user_input(gcp_crs).is_projected:
        crs = gcp_crs
    else:  # geographic GCPs (x = longitude, y = latitude): use their UTM zone
        first = next(iter(points.values()))[0]
        crs = utm_crs_for(float(first[1]), float(first[0]))
    to_crs = Transformer.from_crs(gcp_crs, crs, always_xy=True)
    sfm_points, crs_points = [], []
    for coordinates, observations in points.values():
        seen = [(images[name], x, y) for name, x, y in observations if name in images]
        if len(seen) < 2:
            continue
        origins = np.array([image.projection_center() for image, _, _ in seen])
        directions = []
        for image, x, y in seen:
            camera = reconstruction.cameras[image.camera_id]
            ray = np.append(camera.cam_from_img(np.array([[x, y]]))[0], 1.0)
            directions.append(image.cam_from_world().rotation.matrix().T @ ray)
        sfm_points.append(triangulate_rays(origins, np.array(directions)))
        crs_points.append(np.array(to_crs.transform(*coordinates)))
    if len(sfm_points) < MIN_GPS_PHOTOS:
        raise GeoreferenceError(
            f"{path}: only {len(sfm_points)} ground control points are seen in two or more registered photos; "
            f"georeferencing needs at least {MIN_GPS_PHOTOS}"
        )
    return np.array(sfm_points), np.array(crs_points), crs
