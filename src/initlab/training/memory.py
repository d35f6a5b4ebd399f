"""How much memory a device has free, so that oversized experiments are refused before allocating.

Refusing up front turns "the machine swapped for a minute, then an out-of-memory traceback" into a
one-line error with the estimate; the estimates themselves live next to what they estimate
(``mlp_engine.bytes_per_model``, ``experiments.compare.estimate_memory``: data, one chunk of models
in training, per-run bookkeeping; shown by ``initlab compare --dry-run``).
"""
from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory on ``device`` in bytes, or None when it cannot be read (then nothing is refused).

    CUDA: ``torch.cuda.mem_get_info``. CPU: ``MemAvailable`` of /proc/meminfo (Linux), else free
    physical pages from ``sysconf``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no driver, no device: nothing to compare against
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: three significant digits, binary units up to EiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    x = float(n)
    for unit in units:
        if abs(x) < 1000 or unit == units[-1]:  # < 1000, not 1024: never "1.02e+03 MiB"
            return f"{int(x)} B" if unit == "B" else f"{x:.3g} {unit}"
        x /= 1024
    return f"{x:.3g} EiB"


def module_footprint(build, input_shape) -> dict:
    """Size a model without allocating it: ``build()`` runs on PyTorch's ``meta`` device (shapes
    only) and a forward pass of two examples of ``input_shape`` (per example; or a callable
    ``input_shape(model)``) is traced by hooks on every leaf module.

    Returns ``params`` and ``buffers`` (element counts), ``act`` (leaf-module output elements per
    example: what backward keeps), ``act_max`` (the largest single output per example) and
    ``layers`` (leaf-module calls). A model that cannot be built or run on ``meta`` is measured
    for real on two examples instead (its parameters are then allocated once); None if that fails
    too (the model does not run: the caller's output check reports why).
    """
    def measure(device: str) -> dict:
        with torch.device(device):
            model = build()
        shape = tuple(input_shape(model) if callable(input_shape) else input_shape)
        sizes: list[int] = []

        def hook(module, inputs, output):
            sizes.append(output.numel() if isinstance(output, torch.Tensor) else 0)

        hooks = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
        try:
            with torch.no_grad():
                model(torch.zeros(2, *shape, device=device))
        finally:
            for h in hooks:
                h.remove()
        return {"params": sum(p.numel() for p in model.parameters()),
                "buffers": sum(b.numel() for b in model.buffers()),
                "act": sum(sizes) // 2, "act_max": max(sizes, default=0) // 2, "layers": len(sizes)}

    try:
        return measure("meta")
    except Exception:  # noqa: BLE001 - e.g. a user model calling .item(): measure it for real, small
        pass
    try:
        return measure("cpu")
    except Exception:  # noqa: BLE001 - it does not run at all: the caller's output check says why
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS (``mallopt``).

    Training allocates and frees the same large activation tensors every step. Above glibc's mmap
    threshold each free returns the pages to the kernel and the next step faults them in again;
    on virtual machines a fault is expensive enough that this dominates small-model training
    (measured on a 2-vCPU VM: zoo CNN 33 → 23 s per model-epoch, batched engine 39 → 21 s). The
    price: the process's resident size stays at its peak. The CLI calls this at start unless
    ``INITLAB_MALLOC=system``; the library never does on its own. Returns False where there is
    no glibc (macOS, musl, Windows): nothing changes there.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    return bool(mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, 1 << 40) and mallopt(m_top_pad, 64 << 20))
