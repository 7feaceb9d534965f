"""GpuMemoryWatch against a fake NVML: the peak of what the watched process tree holds, and the fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from nerfseg_plugin.blocks import gpu_memory
from nerfseg_plugin.blocks.gpu_memory import GpuMemoryWatch

MIB = 1 << 20


class FakeNvml:
    """Two GPUs; ``processes`` and ``used`` are what the driver reports now (tests change them over time)."""

    def __init__(self, processes, used=0):
        self.processes, self.used, self.shut = processes, used, False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used if handle == 0 else 0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for gpu, pid, mem in self.processes if gpu == handle]


@pytest.fixture
def child():
    """A process with a child of its own, like ns-train's workers."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(30)']); time.sleep(30)",
        ]
    )
    time.sleep(0.5)
    import psutil

    grandchild = psutil.Process(parent.pid).children()[0].pid
    yield parent.pid, grandchild
    for process in psutil.Process(parent.pid).children(recursive=True):
        process.kill()
    parent.kill()
    parent.wait()


def test_peak_sums_the_process_tree_over_gpus_and_ignores_other_processes(monkeypatch, child) -> None:
    pid, grandchild = child
    nvml = FakeNvml([(0, pid, 300 * MIB), (1, grandchild, 100 * MIB), (0, os.getpid(), 5000 * MIB)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with GpuMemoryWatch(pid, interval_s=0.01) as watch:
        time.sleep(0.1)
        nvml.processes = [(0, pid, 700 * MIB), (1, grandchild, 100 * MIB)]
        time.sleep(0.1)
        nvml.processes = [(0, pid, 200 * MIB)]
        time.sleep(0.1)
    assert watch.peak_mib == pytest.approx(800)
    assert watch.source == "process"
    assert nvml.shut


@pytest.mark.parametrize("listed", ["none", "host_pid"])
def test_unreported_per_process_memory_falls_back_to_device_use_above_the_start(monkeypatch, child, listed) -> None:
    pid, _ = child
    nvml = FakeNvml([], used=1000 * MIB)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with GpuMemoryWatch(pid, interval_s=0.01) as watch:
        # NVML gives no memory for the process, or lists it under a PID of another namespace
        nvml.processes = [(0, pid, None)] if listed == "none" else [(0, 999999, 600 * MIB)]
        nvml.used = 1600 * MIB
        time.sleep(0.1)
        nvml.used = 1200 * MIB
        time.sleep(0.1)
    assert watch.source == "device"
    assert watch.peak_mib == pytest.approx(600)


def test_no_nvml_or_no_gpu_gives_none(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with GpuMemoryWatch(os.getpid()) as watch:
        pass
    assert watch.peak_mib is None

    class NoGpu(FakeNvml):
        def nvmlDeviceGetCount(self):
            return 0

    monkeypatch.setitem(sys.modules, "pynvml", NoGpu([]))
    assert gpu_memory._nvml() is None
