"""Hand freed heap memory back to the operating system.

glibc keeps memory that Python and native libraries free in its arenas, so a process's RSS
stays at its peak after a burst (a model load, a large answer, a finished job) although the
memory is free. `malloc_trim(0)` returns those free pages. It is a no-op where the C library
has no `malloc_trim` (macOS, musl), so callers need not know the platform.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True when the C library could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
