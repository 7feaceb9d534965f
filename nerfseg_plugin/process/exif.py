"""Reading what survey photos carry in EXIF: GPS position, camera, focal length, capture time and orientation.

Pillow's ``getexif`` reads only the EXIF block (not the pixels), so scanning thousands of 20 MP photos costs
milliseconds each. Missing or malformed tags read as None; a photo without GPS is an ordinary photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps

from nerfseg_plugin.core.errors import SceneFormatError

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL, ORIENTATION, DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
FOCAL_LENGTH, FOCAL_LENGTH_35MM, DATETIME_ORIGINAL, SUBSEC_ORIGINAL = 0x920A, 0xA405, 0x9003, 0x9291
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_ALT_REF, GPS_ALT = 1, 2, 3, 4, 5, 6
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that swap width and height (a 90 or 270 degree rotation, possibly mirrored)."""


@dataclass(frozen=True)
class GpsPosition:
    """WGS 84 position: degrees (east and north positive) and altitude in metres (None when not recorded)."""

    latitude: float
    longitude: float
    altitude: float | None


@dataclass(frozen=True)
class PhotoExif:
    """The EXIF fields the survey pipeline uses; None where a tag is absent or unreadable."""

    gps: GpsPosition | None = None
    make: str | None = None
    model: str | None = None
    focal_length_mm: float | None = None
    focal_length_35mm: float | None = None
    capture_time: datetime | None = None
    orientation: int = 1
    """EXIF orientation 1-8 (1: stored pixels are upright)."""

    @property
    def is_rotated(self) -> bool:
        return self.orientation != 1


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="ignore")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 ").strip()
    return value or None


def _degrees(dms, ref) -> float | None:
    """(degrees, minutes, seconds) rationals plus an N/S/E/W reference -> signed decimal degrees."""
    try:
        parts = [_number(v) for v in dms]
    except TypeError:
        return None
    if len(parts) != 3 or any(p is None for p in parts):
        return None
    value = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    return -value if _text(ref) in ("S", "W") else value


def _gps(gps_ifd) -> GpsPosition | None:
    latitude = _degrees(gps_ifd.get(GPS_LAT, ()), gps_ifd.get(GPS_LAT_REF))
    longitude = _degrees(gps_ifd.get(GPS_LON, ()), gps_ifd.get(GPS_LON_REF))
    if latitude is None or longitude is None or not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    if latitude == 0.0 and longitude == 0.0:  # cameras without a fix often write zeros
        return None
    altitude = _number(gps_ifd.get(GPS_ALT))
    reference = gps_ifd.get(GPS_ALT_REF, 0)
    below_sea_level = reference in (1, b"\x01") or (isinstance(reference, bytes) and reference[:1] == b"\x01")
    if altitude is not None and below_sea_level:
        altitude = -altitude
    return GpsPosition(latitude, longitude, altitude)


def _capture_time(exif, exif_ifd) -> datetime | None:
    stamp = _text(exif_ifd.get(DATETIME_ORIGINAL)) or _text(exif.get(DATETIME))
    if stamp is None:
        return None
    try:
        moment = datetime.strptime(stamp[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    subsec = _text(exif_ifd.get(SUBSEC_ORIGINAL))
    if subsec and subsec.isdigit():
        moment = moment.replace(microsecond=int(subsec.ljust(6, "0")[:6]))
    return moment


def read_exif(path: Path) -> PhotoExif:
    """The photo's EXIF fields (all None for a photo without EXIF); SceneFormatError if it is not an image."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except OSError as err:
        raise SceneFormatError(path, f"unreadable image: {err}") from None
    exif_ifd, gps_ifd = exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)
    orientation = exif.get(ORIENTATION, 1)
    return PhotoExif(
        gps=_gps(gps_ifd) if gps_ifd else None,
        make=_text(exif.get(MAKE)),
        model=_text(exif.get(MODEL)),
        focal_length_mm=_number(exif_ifd.get(FOCAL_LENGTH)),
        focal_length_35mm=_number(exif_ifd.get(FOCAL_LENGTH_35MM)) or None,  # 0 means unknown
        capture_time=_capture_time(exif, exif_ifd),
        orientation=orientation if orientation in range(1, 9) else 1,
    )


def upright_size(stored_size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(width, height) as the photo is displayed after its EXIF orientation is applied."""
    width, height = stored_size
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def open_upright_rgb(path: Path, max_size: int | None = None) -> Image.Image:
    """The photo as RGB with its EXIF orientation applied; ``max_size`` lets JPEG decode at a reduced scale
    (``draft``), which bounds memory for 20 MP photos that are written smaller anyway."""
    with Image.open(path) as image:
        if max_size is not None and image.format == "JPEG":
            width, height = image.size
            scale = max_size / max(width, height)
            if scale < 0.5:  # draft picks a power-of-two reduction no smaller than the requested size
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")
