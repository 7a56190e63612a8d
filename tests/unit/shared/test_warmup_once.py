"""A service's warm-up runs once per process, however many of its apps start."""

from __future__ import annotations

import threading
import uuid

from shared.warmup import start_warming


def test_a_second_start_shares_the_first_warm_up() -> None:
    calls: list[int] = []
    release = threading.Event()

    def warm() -> None:
        calls.append(1)
        release.wait(30)

    name = f"svc-{uuid.uuid4().hex[:8]}"
    first = start_warming(name, warm)
    second = start_warming(name, warm)  # while the first is still running
    release.set()
    assert second is first
    first.result(timeout=30)
    assert start_warming(name, warm) is first  # and after it finished
    assert calls == [1]
    other = start_warming(f"{name}-other", lambda: None)
    assert other is not first
    other.result(timeout=30)
