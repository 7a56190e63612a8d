"""Freed heap pages go back to the OS where the C library can (glibc's malloc_trim)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from shared.memory import release_free_memory

SCRIPT = """
import json
from shared.memory import release_free_memory

def rss_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024

# many mid-sized blocks (below glibc's mmap threshold: they live in the heap), freed but
# for one kept at the top of each run, so the heap cannot shrink by itself
blocks = [bytearray(64 * 1024) for _ in range(4000)]
keep = blocks[::50]
del blocks
before = rss_mb()
assert release_free_memory()
print(json.dumps({"before": before, "after": rss_mb()}))
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_returned_to_the_os() -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True, check=True
    )
    sizes = json.loads(out.stdout)
    assert sizes["before"] - sizes["after"] > 100, sizes  # ~250 MB freed, 5 MB kept


def test_release_is_safe_to_call_repeatedly() -> None:
    assert release_free_memory() == release_free_memory()
