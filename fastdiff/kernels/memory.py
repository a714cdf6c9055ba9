"""Fresh CPU output buffers backed by transparent huge pages where the OS allows it.

A fresh 64 MB tensor costs ~40 ms of first-touch page faults with 4 KiB pages on a 2-core machine
(16k faults), ~9 ms with 2 MiB pages, against ~20 ms for a whole fused DDIM step into existing buffers.
`empty_like` asks for huge pages with madvise(MADV_HUGEPAGE) on memory it has just allocated and owns,
before anything touches it. Only a hint: with THP "never", on other systems or where libc is missing,
it is plain `torch.empty_like`. Values are never affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux
HUGE = 2 << 20  # below two huge pages there is nothing to gain
PAGE = 4096


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _libc_madvise()


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """`torch.empty_like(x)`; on the CPU, a large result is advised to use huge pages before first touch."""
    out = torch.empty_like(x)
    nbytes = out.nbytes
    if nbytes >= 2 * HUGE and _madvise is not None and out.is_cpu:  # the cheap test first: small is common
        start = -(-out.data_ptr() // PAGE) * PAGE  # whole pages inside the buffer only
        end = (out.data_ptr() + nbytes) // PAGE * PAGE
        if end > start:
            _madvise(start, end - start, MADV_HUGEPAGE)  # a failure only means no huge pages
    return out


RUN_ALIGN_BYTES = 16  # a 16-byte vector load


def aligned_runs(numels: list[int], itemsize: int) -> tuple[list[int], int]:
    """(start of each run, total elements) of one buffer holding runs of `numels` elements in order, each
    starting at the first multiple of 16 bytes after the previous one: the layout of the probe watch's
    parameter snapshot, so that every run is as aligned as a tensor of its own (vector loads in the kernels,
    and the same results as for one).

    >>> aligned_runs([35, 7, 16], 4)
    ([0, 36, 44], 60)
    """
    step = max(1, RUN_ALIGN_BYTES // itemsize)
    offsets, end = [], 0
    for n in numels:
        offsets.append(-(-end // step) * step)  # the next aligned start after the previous run
        end = offsets[-1] + int(n)
    return offsets, end
