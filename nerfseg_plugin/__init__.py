"""nerfseg: multi-view semantic segmentation of aerial scenes from a few labeled views, as nerfstudio methods.

Importing the package stays light (no gsplat / sam2 / pycolmap); it only makes nerfstudio's checkpoints loadable
under torch >= 2.6 and gives ``ns-render`` the ffmpeg that imageio-ffmpeg ships, since every ns-* command that
touches our configs imports this package first.
"""

from nerfseg_plugin.compat import allow_numpy_in_checkpoints, ensure_ffmpeg_on_path

allow_numpy_in_checkpoints()
ensure_ffmpeg_on_path()

__version__ = "0.1.0"
