"""What a benchmark ran on, printed at its top and stored beside its numbers."""

from __future__ import annotations

import os
import platform


def machine_info(device: str = "cpu") -> dict:
    """The CPU's model and cores, torch's version and threads, Python's version (and the GPU's name
    when ``device`` is cuda and one is there)."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                python=platform.python_version())
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
