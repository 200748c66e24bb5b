"""Process-level tuning for CPU rendering, and the machine description benchmarks print."""

from __future__ import annotations


def tune_glibc_malloc() -> bool:
    """Keep freed memory in the heap (glibc ``mallopt``), returning whether it applied.

    By default glibc serves multi-megabyte blocks with fresh ``mmap`` pages and hands them back on
    free, so every large temporary of a frame pays page faults again; on small CPUs that is a
    large share of the rasterizer's time. Raising the mmap and trim thresholds (equivalently, the
    environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``) avoids it.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (falls back to :func:`platform.processor`), for benchmark tables."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
