"""Geotagged JPEGs for generated scenes: EXIF GPS with a chosen noise, placed at a chosen latitude/longitude.

The generator's world frame is metric with z up. It is placed in the UTM zone of the origin so that world (x, y, z)
is UTM (easting, northing, height) minus the origin's: ``geotag_truth.json`` records that exact scene-to-CRS
mapping, and each photo's EXIF holds its camera centre plus Gaussian noise, as a consumer GPS would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from nerfseg_plugin.process.exif import (
    DATETIME_ORIGINAL,
    EXIF_IFD,
    FOCAL_LENGTH,
    FOCAL_LENGTH_35MM,
    GPS_ALT,
    GPS_ALT_REF,
    GPS_IFD,
    GPS_LAT,
    GPS_LAT_REF,
    GPS_LON,
    GPS_LON_REF,
    MAKE,
    MODEL,
    ORIENTATION,
)
from nerfseg_plugin.process.georeference import utm_crs_for

GEOTAG_TRUTH_FILE = "geotag_truth.json"
SENSOR_WIDTH_MM = 6.17
"""A 1/2.3" sensor, common in small drones: sets the EXIF focal length in mm that matches the field of view."""
CAPTURE_START = datetime(2026, 6, 1, 10, 0, 0)
CAPTURE_INTERVAL_S = 2.0


@dataclass(frozen=True)
class GeotagOrigin:
    """Where the generated world's origin lies on Earth."""

    latitude: float
    longitude: float
    altitude: float


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = math.floor(value)
    minutes = math.floor((value - degrees) * 60)
    return float(degrees), float(minutes), (value - degrees - minutes / 60) * 3600


def gps_exif(latitude: float, longitude: float, altitude: float, capture_time: datetime, fov_deg: float) -> bytes:
    """EXIF block with GPS, camera make/model, focal length (mm and 35 mm equivalent) and capture time."""
    half_fov = math.tan(math.radians(fov_deg) / 2)
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "nerfseg", "rsseg-make-scene", 1
    exif[EXIF_IFD] = {
        FOCAL_LENGTH: SENSOR_WIDTH_MM / 2 / half_fov,
        FOCAL_LENGTH_35MM: round(36.0 / 2 / half_fov),
        DATETIME_ORIGINAL: capture_time.strftime("%Y:%m:%d %H:%M:%S"),
    }
    exif[GPS_IFD] = {
        GPS_LAT_REF: "N" if latitude >= 0 else "S",
        GPS_LAT: _dms(latitude),
        GPS_LON_REF: "E" if longitude >= 0 else "W",
        GPS_LON: _dms(longitude),
        GPS_ALT_REF: 0 if altitude >= 0 else 1,
        GPS_ALT: abs(altitude),
    }
    return exif.tobytes()


def make_geotags(
    poses: list[np.ndarray], origin: GeotagOrigin, noise_m: float, fov_deg: float, seed: int
) -> tuple[list[bytes], dict]:
    """Per view an EXIF block (noisy GPS of its camera centre) and the truth record for ``geotag_truth.json``."""
    from pyproj import Transformer

    crs = utm_crs_for(origin.latitude, origin.longitude)
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    easting, northing = to_crs.transform(origin.longitude, origin.latitude)
    offset = np.array([easting, northing, origin.altitude])
    rng = np.random.default_rng([seed, 0x6E0])  # own stream: geotags never change the rendered scene
    centres = np.array([pose[:3, 3] for pose in poses], dtype=np.float64) + offset
    measured = centres + rng.normal(0.0, noise_m, centres.shape)
    longitudes, latitudes = to_wgs84.transform(measured[:, 0], measured[:, 1])
    exifs = [
        gps_exif(lat, lon, alt, CAPTURE_START + timedelta(seconds=i * CAPTURE_INTERVAL_S), fov_deg)
        for i, (lat, lon, alt) in enumerate(zip(latitudes, longitudes, measured[:, 2], strict=True))
    ]
    scene_to_crs = np.eye(4)
    scene_to_crs[:3, 3] = offset
    truth = {
        "crs": crs,
        "scene_to_crs": scene_to_crs.tolist(),
        "origin": {"latitude": origin.latitude, "longitude": origin.longitude, "altitude": origin.altitude},
        "gps_noise_m": noise_m,
        "camera_centres_crs": centres.tolist(),
        "gps_crs": measured.tolist(),
    }
    return exifs, truth


def write_geotag_truth(folder: Path, truth: dict) -> None:
    (folder / GEOTAG_TRUTH_FILE).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
