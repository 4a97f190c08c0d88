"""``mot bench --profile DIR``: where one training step's time goes, per architecture.

After the timed rounds, one more step of each architecture runs under ``torch.profiler`` (host
and, on CUDA, device activity). ``DIR/<architecture>.txt`` lists the operators by total time
(device time on CUDA, host time on CPU), ``DIR/<architecture>.trace.json`` is the timeline for
chrome://tracing or Perfetto. Two architectures' tables side by side show which kernels one of
them spends more on, which the medians alone cannot say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

#: operators listed per table (the long tail is in the trace)
ROWS = 60


def profile_step(step: Callable[[], object], device: torch.device, out_dir: Path, name: str) -> Path:
    """Run ``step()`` once under the profiler; write ``name.txt`` and ``name.trace.json`` into
    ``out_dir``; return the table's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as profiler:  # shapes: in the trace
        step()
    sort_by = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort_by, row_limit=ROWS, max_name_column_width=60)
    path = out_dir / f"{name}.txt"
    path.write_text(f"one training step of {name} on {device}, operators by {sort_by}\n\n{table}\n")
    profiler.export_chrome_trace(str(out_dir / f"{name}.trace.json"))
    return path
