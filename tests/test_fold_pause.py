"""Folds and pushes wait for a pause in the updates (updater.Updater._after_the_burst)."""

from __future__ import annotations

import asyncio
import time

from gitdns import updater as updater_module
from gitdns.updater import Updater


async def _stream(updater: Updater, seconds: float) -> None:
    """Updates answered every 10 ms for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        updater.last_update = time.monotonic()
        await asyncio.sleep(0.01)


def _waited(monkeypatch, stream_for: float, quiet: float, max_delay: float) -> float:
    monkeypatch.setattr(updater_module, "UPDATES_QUIET", quiet)
    monkeypatch.setattr(updater_module, "FOLD_MAX_DELAY", max_delay)
    updater = Updater.__new__(Updater)
    updater.last_update = time.monotonic()

    async def main() -> float:
        stream = asyncio.ensure_future(_stream(updater, stream_for))
        started = time.monotonic()
        await updater._after_the_burst(started)
        waited = time.monotonic() - started
        stream.cancel()
        return waited

    return asyncio.run(main())


def test_a_fold_waits_for_the_end_of_a_burst(monkeypatch):
    waited = _waited(monkeypatch, stream_for=0.4, quiet=0.1, max_delay=5.0)
    assert 0.4 + 0.1 - 0.02 <= waited < 2.0


def test_a_fold_waits_no_longer_than_its_limit_under_a_stream(monkeypatch):
    waited = _waited(monkeypatch, stream_for=5.0, quiet=0.1, max_delay=0.3)
    assert 0.3 - 0.02 <= waited < 1.5


def test_a_fold_after_a_single_update_waits_only_the_pause(monkeypatch):
    waited = _waited(monkeypatch, stream_for=0.0, quiet=0.1, max_delay=5.0)
    assert waited < 1.0
