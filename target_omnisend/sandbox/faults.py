"""Injected misbehaviour: 500/503 answers, slow answers, dropped connections."""

from __future__ import annotations

from target_omnisend.sandbox.state import SandboxState


def pick_fault(state: SandboxState) -> str | None:
    """Which fault (``drop``, ``error``, ``slow``) hits this request, if any."""
    settings = state.settings
    with state.fault_lock:
        roll = state.rng.random
        if settings.drop_rate and roll() < settings.drop_rate:
            return "drop"
        if settings.error_rate and roll() < settings.error_rate:
            return "error"
        if settings.slow_rate and roll() < settings.slow_rate:
            return "slow"
    return None


def error_status(state: SandboxState) -> int:
    """500 or 503, evenly."""
    with state.fault_lock:
        return 500 if state.rng.random() < 0.5 else 503
