"""Peak GPU memory of a training process while it runs, read through NVML (``pynvml``, from nvidia-ml-py).

RSS says nothing about a CUDA run's footprint: the Gaussians, images and rasterizer buffers live on the device.
NVML reports what each process holds on the GPU (its CUDA context, the allocator's cache and its tensors), i.e.
what has to fit on the card, so that is what a block's "peak memory" means on GPU machines. Polled, so a peak
shorter than the interval can be missed; the allocator keeps freed blocks cached, which makes peaks long-lived.
"""

from __future__ import annotations

import threading
from types import ModuleType


def _nvml() -> ModuleType | None:
    """The initialised NVML bindings, or None without nvidia-ml-py, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            pynvml.nvmlShutdown()
            return None
    except Exception:  # NVMLError: no driver / no device
        return None
    return pynvml


def _process_tree(pid: int) -> set[int]:
    """pid and its descendants (ns-train may run its work in a child)."""
    try:
        import psutil

        return {pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))}
    except Exception:  # psutil missing or the process already gone
        return {pid}


class GpuMemoryWatch:
    """Context manager polling the GPU memory held by a process tree; ``peak_mib`` is None without a GPU.

    Where the driver reports no memory for the tree's processes (some virtualised GPUs report None; in a container
    NVML may list host PIDs, which match nothing), the device's used memory above its level at the start is taken
    instead (``source == "device"``), which is right only while nothing else runs on the GPU."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.source: str | None = None
        """``process`` (NVML's per-process memory of the tree) or ``device`` (the fallback); None without a GPU."""
        self._tree_peak = 0.0
        self._device_peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: ModuleType | None = None
        self._handles: list = []
        self._baseline = 0

    @property
    def peak_mib(self) -> float | None:
        if self.source is None:
            return None
        return self._tree_peak if self.source == "process" else self._device_peak

    def __enter__(self) -> GpuMemoryWatch:
        self._nvml = _nvml()
        if self._nvml is not None:
            nvml = self._nvml
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            self._baseline = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)
            self.source = "device"
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def sample(self) -> None:
        """One reading: the tree's memory where NVML reports it, and the device's use above the start."""
        nvml, tree = self._nvml, _process_tree(self.pid)
        held, reported = 0, False
        for handle in self._handles:
            for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid in tree and process.usedGpuMemory is not None:
                    held += process.usedGpuMemory
                    reported = True
        if reported:
            self.source = "process"
            self._tree_peak = max(self._tree_peak, held / (1 << 20))
        used = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)
        self._device_peak = max(self._device_peak, max(used - self._baseline, 0) / (1 << 20))

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a process ending between the listing and the query
                pass
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._nvml.nvmlShutdown()
