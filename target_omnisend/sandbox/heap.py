"""Keeping the sandbox's stored data out of the cyclic garbage collector's full passes.

Contacts and batches live until a reset, yet every full pass of CPython's collector walks all
of them, and a pass comes each time the heap has grown by a quarter: while ingesting, that was
about as much CPU as the ingesting itself. After each processed batch, ``after_batch`` collects
the young generations (so no fresh garbage cycle is kept) and freezes what survived: frozen
objects are skipped by the collector but still freed by reference counting, as the sandbox's
acyclic data is on a reset.

Freezing is process-wide, so it is off unless the process is the sandbox's own:
``omnisend-sandbox`` (and benchmarks standing for it) call ``freeze_after_batches``.
"""

from __future__ import annotations

import gc

_freezing = False


def freeze_after_batches(enabled: bool = True) -> None:
    """Freeze the heap after each processed batch from now on (``enabled``) or not."""
    global _freezing
    _freezing = enabled


def after_batch() -> None:
    """Called by the batch manager once a batch's items are applied."""
    if _freezing:
        gc.collect(1)
        gc.freeze()
