"""glibc malloc tuning for a training process: memory that torch frees between tensors goes back to the OS.

glibc serves a request of at least ``M_MMAP_THRESHOLD`` bytes with a mapping of its own, unmapped when it is
freed; smaller ones come from the heap, where a freed block stays resident until it is reused. The threshold
starts at 128 KiB but rises to the size of every mapped block that is freed (up to 32 MiB), so after the
first few tensors are freed nearly every activation comes from the heap, and the blocks a forward pass frees
between those autograd keeps stay resident: a step of 16 multi-image rows on tiny-llama-m left RSS 259 MB
above its start after the forward pass, of which 141 MB was still in use (``malloc_trim`` gave back the
rest). Setting the threshold fixes it (mallopt(3): a set value is no longer adjusted). The price is page
faults for fresh mappings. Measured on ``benchmarks/harness_bench.py --quick``'s multi-image engine run:
peak RSS 784 -> 678 MB at 1 MiB, for 3.9 s more system time (+4% of its 105 CPU seconds); 512 KiB saved
more but cost +11%, 256 KiB +35%, so 1 MiB it is. A user's ``MALLOC_MMAP_THRESHOLD_`` is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3  # <malloc.h>
#: bytes; one-image rows' activations (~0.5 MB) stay on the heap, where they cost no page faults
MMAP_THRESHOLD = 1 << 20


def release_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes or more with their own mapping, for the rest of the process.

    Returns whether it was set: not where the C library is not glibc, nor where the user chose a threshold
    with glibc's ``MALLOC_MMAP_THRESHOLD_`` environment variable (theirs stays).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not _is_glibc():
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # the name is unknown off glibc
        return False
