"""Resident memory of a process and of its process tree, read from Linux's /proc."""

from __future__ import annotations

from pathlib import Path


def rss_mb(pid: int) -> float | None:
    """Return a process's resident set size in MB (None when it is gone or not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(parent: int) -> set[int]:
    """Return the processes whose parent is parent."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            out.add(int(stat.parent.name))
    return out


def tree(root: int) -> set[int]:
    """Return root and every process below it."""
    out, todo = {root}, [root]
    while todo:
        for child in children(todo.pop()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def tree_rss_mb(root: int) -> tuple[float, int]:
    """Return the summed RSS in MB of root's process tree, and how many processes it has."""
    pids = tree(root)
    return sum(rss_mb(p) or 0.0 for p in pids), len(pids)
