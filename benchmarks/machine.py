"""What every benchmark prints about the machine it ran on, and the GPU clock barrier they share.

Imported by the scripts beside it (``python benchmarks/bench_x.py`` puts this folder on ``sys.path``).
"""
from __future__ import annotations

import os
import platform

import torch


def machine_info(device: torch.device | None = None) -> str:
    """CPU model, cores, torch and its intra-op threads, the GPU (on CUDA), Python and the load average:
    the line the numbers of a run are read against (this VM is shared, so the load matters)."""
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                   platform.processor() or "?")
    gpu = f"; GPU {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    load = os.getloadavg()
    return (f"CPU: {cpu}; cores: {os.cpu_count()}; torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{gpu}; python {platform.python_version()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
