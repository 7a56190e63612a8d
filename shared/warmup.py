"""Compile numba kernels before the first request: in a background thread at service start.

A kernel compiles on its first call (seconds each on two cores, minutes for a whole engine
on a busy machine) and keeps its machine code on disk (``cache=True``): a fresh install
compiles once, later starts load the cache. :func:`start_warming` runs a service's warm-up
function in a daemon thread as the service starts. A request that calls a kernel meanwhile
waits on numba's compiler lock and then reuses the compiled code: the first request waits
for the warm-up, it never compiles the same kernel a second time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from shared.memory import release_free_memory
from shared.state import Slot

log = logging.getLogger(__name__)


# The warm-up of an app's kernels (a future of its seconds): `KERNELS.put(app, ...)`.
KERNELS: Slot[Future[float]] = Slot("kernels", Future)

_started: dict[str, Future[float]] = {}
_lock = threading.Lock()


def start_warming(name: str, warm: Callable[[], Any]) -> Future[float]:
    """Run warm() in a daemon thread; return a future of its seconds (or of its error).

    Once per process and name: compiled kernels stay compiled for the process, so a second
    app of the same service (the platform host, tests, a restart in the same interpreter)
    shares the first one's warm-up instead of running it again.
    """
    with _lock:
        if name in _started:
            return _started[name]
        future: Future[float] = Future()
        _started[name] = future

    def run() -> None:
        t0 = time.perf_counter()
        try:
            warm()
        except Exception as e:  # a failed warm-up only leaves the compile to the first request
            log.warning("%s: kernels not warmed (%s: %s)", name, type(e).__name__, e)
            future.set_exception(e)
            return
        seconds = time.perf_counter() - t0
        release_free_memory()  # the compiler's working memory is garbage once the code is built
        log.info("%s: kernels ready in %.1f s", name, seconds)
        future.set_result(seconds)

    threading.Thread(target=run, name=f"{name}-warm", daemon=True).start()
    return future
