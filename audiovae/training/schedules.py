"""KL weight and learning-rate schedules: pure functions of the step, so resuming needs no state."""

from __future__ import annotations

import math

from audiovae.errors import ConfigError


def kl_weight(step: int, beta: float, kind: str, warmup_steps: int, ramp: float = 0.5) -> float:
    """KL weight at optimiser step ``step`` (0-based).

    ``none``: ``beta`` throughout. ``linear``: 0 -> ``beta`` over ``warmup_steps``.
    ``cyclical`` (Fu et al. 2019): cycles of ``warmup_steps``, ramping 0 -> ``beta``
    over the first ``ramp`` fraction of each cycle, then holding ``beta``.
    """
    if kind == "none" or warmup_steps <= 0:
        return beta
    if kind == "linear":
        return beta * min(1.0, (step + 1) / warmup_steps)
    if kind == "cyclical":
        pos = (step % warmup_steps) / warmup_steps
        return beta * min(1.0, pos / max(ramp, 1e-8))
    raise ConfigError(f"unknown kl_warmup {kind!r}; choose none, linear or cyclical")


def learning_rate(step: int, lr: float, kind: str, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine decay to 10% at ``max_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    if kind == "cosine":
        span = max(1, max_steps - warmup_steps)
        frac = min(1.0, (step - warmup_steps) / span)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
    raise ConfigError(f"unknown lr_schedule {kind!r}; choose constant or cosine")
