"""A lifespan's background loop runs while the app runs and is stopped, awaited, at its end."""

from __future__ import annotations

import asyncio

import anyio

from shared.app import in_background


def test_the_loop_runs_inside_the_block_and_is_cancelled_and_awaited_at_its_end() -> None:
    seen: list[str] = []
    started = asyncio.Event()

    async def loop() -> None:
        try:
            while True:
                seen.append("tick")
                started.set()
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def go() -> None:
        async with in_background(loop(), name="loop"):
            await started.wait()
        assert seen[-1] == "cancelled"  # already stopped when the block is left
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "loop"]

    anyio.run(go)
    assert seen.count("cancelled") == 1 and seen[0] == "tick"


def test_no_work_is_a_plain_block() -> None:
    async def go() -> int:
        async with in_background(None, name="nothing"):
            return len(asyncio.all_tasks())

    assert anyio.run(go) == 1  # the block's own task only
