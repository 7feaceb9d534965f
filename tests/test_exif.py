"""EXIF reading: GPS, camera, focal length, capture time and orientation, on real survey photos and written tags;
EXIF rotation applied to photos and label maps alike (or a mismatch refused, naming the file)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nerfseg_plugin.core.errors import SceneFormatError
from nerfseg_plugin.process.cli import stage_upright_photos
from nerfseg_plugin.process.config import ProcessDataConfig
from nerfseg_plugin.process.exif import ORIENTATION, open_upright_rgb, read_exif, upright_size
from nerfseg_plugin.process.labels import collect_inputs
from nerfseg_plugin.scenegen.geotag import gps_exif


def shared_data() -> Path | None:
    """../shared next to the repository (CI), else /work/shared; None when neither has the Seneca survey."""
    for root in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")):
        if (root / "data" / "seneca" / "images_512").is_dir():
            return root / "data" / "seneca"
    return None


SENECA = shared_data()


@pytest.mark.skipif(SENECA is None, reason="the Seneca survey (shared/data/seneca) is not available")
def test_real_survey_photos() -> None:
    photos = sorted((SENECA / "images_512").glob("*.jpg"))[:4]
    readings = [read_exif(path) for path in photos]
    for exif in readings:
        assert exif.gps is not None and 41.0 < exif.gps.latitude < 41.1 and -83.4 < exif.gps.longitude < -83.2
        assert exif.gps.altitude is not None and 200 < exif.gps.altitude < 400
        assert exif.make == "Canon" and exif.model == "Canon PowerShot ELPH 300 HS"
        assert exif.focal_length_mm == pytest.approx(4.3) and exif.focal_length_35mm is None  # tag not written
        assert exif.capture_time is not None and exif.capture_time.date() == datetime(2013, 6, 4).date()
        assert exif.orientation == 1
    assert len({(e.gps.latitude, e.gps.longitude) for e in readings}) == len(readings)  # a flight, not one point


@pytest.mark.parametrize("latitude, longitude, altitude", [(47.376887, 8.541694, 412.5), (-33.8688, -151.2093, -2.0)])
def test_written_geotags_read_back(tmp_path: Path, latitude: float, longitude: float, altitude: float) -> None:
    path = tmp_path / "photo.jpg"
    stamp = datetime(2026, 6, 1, 10, 0, 4)
    Image.new("RGB", (32, 24)).save(path, exif=gps_exif(latitude, longitude, altitude, stamp, fov_deg=60.0))
    exif = read_exif(path)
    assert exif.gps.latitude == pytest.approx(latitude, abs=1e-7)
    assert exif.gps.longitude == pytest.approx(longitude, abs=1e-7)
    assert exif.gps.altitude == pytest.approx(altitude, abs=1e-3)
    assert exif.focal_length_35mm == 31  # 60 degree horizontal field of view on a 36 mm frame
    assert exif.capture_time == stamp and exif.make == "nerfseg"


def test_missing_or_partial_tags_read_as_none(tmp_path: Path) -> None:
    bare = tmp_path / "bare.png"
    Image.new("RGB", (8, 8)).save(bare)
    exif = read_exif(bare)
    assert exif.gps is None and exif.make is None and exif.focal_length_mm is None and exif.capture_time is None
    assert exif.orientation == 1 and not exif.is_rotated
    for name, gps in (
        ("lat_only", {1: "N", 2: (41.0, 2.0, 4.8)}),
        ("no_fix", {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)}),
    ):
        tags = Image.Exif()
        tags[0x8825] = gps
        path = tmp_path / f"{name}.jpg"
        Image.new("RGB", (8, 8)).save(path, exif=tags.tobytes())
        assert read_exif(path).gps is None, name
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(SceneFormatError, match="broken.jpg"):
        read_exif(broken)


def _rotated_photo(path: Path, stored: np.ndarray, orientation: int) -> None:
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=tags.tobytes(), quality=100, subsampling=0)


def test_orientation_is_applied_to_the_photo(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white in the stored pixels
    path = tmp_path / "rotated.jpg"
    _rotated_photo(path, stored, orientation=6)  # displayed rotated 90 degrees clockwise
    exif = read_exif(path)
    assert exif.orientation == 6 and upright_size((40, 20), exif.orientation) == (20, 40)
    upright = np.asarray(open_upright_rgb(path))
    assert upright.shape == (40, 20, 3)
    assert upright[:18].mean() > 200 and upright[22:].mean() < 50  # the white half is now on top


def _labeled_inputs(tmp_path: Path, label_size: tuple[int, int]) -> ProcessDataConfig:
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    stored = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    _rotated_photo(tmp_path / "images" / "a.jpg", stored, orientation=6)
    Image.fromarray(stored).save(tmp_path / "images" / "b.jpg")
    Image.fromarray(np.zeros(label_size[::-1], np.uint8)).save(tmp_path / "labels" / "a.png")
    classes = {"ignore_index": 255, "classes": [{"name": "ground", "color": [0, 0, 0]}]}
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    return ProcessDataConfig(
        images=tmp_path / "images",
        labels=tmp_path / "labels",
        classes=tmp_path / "classes.json",
        output=tmp_path / "out",
        single_camera=False,
    )


def test_label_maps_follow_the_displayed_photo(tmp_path: Path) -> None:
    inputs = collect_inputs(_labeled_inputs(tmp_path, label_size=(20, 40)))  # drawn on the upright photo
    assert inputs.image_sizes == {"a.jpg": (20, 40), "b.jpg": (40, 20)} and inputs.rotated_names == ["a.jpg"]
    staged = stage_upright_photos(inputs, tmp_path / "upright")
    with Image.open(staged.image_dir / "a.jpg") as image:
        assert image.size == (20, 40) and read_exif(staged.image_dir / "a.jpg").orientation == 1
    assert (staged.image_dir / "b.jpg").resolve() == (tmp_path / "images" / "b.jpg").resolve()
    assert not staged.rotated_names


def test_label_map_of_the_stored_pixels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SceneFormatError, match=r"a\.png.*40x20.*20x40 as displayed.*EXIF orientation"):
        collect_inputs(_labeled_inputs(tmp_path, label_size=(40, 20)))
