"""Classified LAS 1.4 / LAZ point clouds (laspy + lazrs) in the map frame.

Point format 7 (x, y, z, RGB, 8-bit classification, so user codes 64+ fit), integer coordinates with a 1 mm scale
and an offset at the area's south-west corner (no float jitter at UTM magnitudes), the class confidence as a
float32 extra dimension and the CRS as an OGC WKT VLR (LAS 1.4's global-encoding WKT bit set). Points are streamed
in chunks; the file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

LAS_SCALE = 0.001
CONFIDENCE_DIMENSION = "confidence"


class ClassifiedLasWriter:
    """``with ClassifiedLasWriter(path, offset, wkt) as las: las.write(xyz, rgb8, codes, confidence)``."""

    def __init__(self, path: Path, offset: tuple[float, float, float], wkt: str):
        import laspy
        from laspy.vlrs.known import WktCoordinateSystemVlr

        self.path, self.temporary = path, path.with_name(f".{path.name}.partial")
        header = laspy.LasHeader(point_format=7, version="1.4")
        header.scales = np.array([LAS_SCALE] * 3)
        header.offsets = np.floor(np.asarray(offset, dtype=np.float64))
        header.add_extra_dim(
            laspy.ExtraBytesParams(name=CONFIDENCE_DIMENSION, type=np.float32, description="class probability")
        )
        header.vlrs.append(WktCoordinateSystemVlr(wkt))
        header.global_encoding.wkt = True
        header.generating_software = "nerfseg rsseg-export-geo"
        self.header = header
        self.count = 0
        self._writer = laspy.open(self.temporary, mode="w", header=header, do_compress=path.suffix.lower() == ".laz")

    def write(self, xyz: np.ndarray, rgb8: np.ndarray, classification: np.ndarray, confidence: np.ndarray) -> None:
        import laspy

        if len(xyz) == 0:
            return
        points = laspy.ScaleAwarePointRecord.zeros(len(xyz), header=self.header)
        points.x, points.y, points.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        # LAS colours are 16-bit: 8-bit values scaled by 257 so that 255 maps to 65535.
        points.red, points.green, points.blue = (rgb8[:, i].astype(np.uint16) * 257 for i in range(3))
        points.classification = classification.astype(np.uint8)
        points[CONFIDENCE_DIMENSION] = confidence.astype(np.float32)
        self._writer.write_points(points)
        self.count += len(xyz)

    def __enter__(self) -> ClassifiedLasWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._writer.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


def labeled_gaussians(model, frame, bounds: tuple[float, float, float, float], min_opacity: float = 0.05):
    """Map-frame positions, 8-bit colours, classes and confidences of the Gaussians inside ``bounds`` (x/y)."""
    import torch
    from nerfstudio.models.splatfacto import SH2RGB

    params = model.gauss_params
    with torch.no_grad():
        keep = torch.sigmoid(params["opacities"][:, 0]) >= min_opacity
        xyz = frame.to_crs(params["means"][keep].double().cpu().numpy())
        x_min, y_min, x_max, y_max = bounds
        inside = (xyz[:, 0] >= x_min) & (xyz[:, 0] <= x_max) & (xyz[:, 1] >= y_min) & (xyz[:, 1] <= y_max)
        ids = torch.from_numpy(np.flatnonzero(keep.cpu().numpy())[inside]).to(params["means"].device)
        probabilities = torch.softmax(model.semantic_decoder(params["semantic_features"][ids]), dim=-1)
        confidence, classes = probabilities.max(dim=-1)
        dc = params["features_dc"][ids]
        rgb = SH2RGB(dc) if model.config.sh_degree > 0 else torch.sigmoid(dc)
        rgb8 = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return xyz[inside], rgb8, classes.cpu().numpy(), confidence.float().cpu().numpy()
