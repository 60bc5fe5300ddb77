"""Count the operations that make a GPU wait for the host, while running on the CPU.

On a GPU, ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (all ``aten._local_scalar_dense``)
and ops whose output shape depends on the data (``nonzero``, ``masked_select``, ``unique``)
block until the device catches up. They dispatch the same way on the CPU, so a
``TorchDispatchMode`` can count them in a CPU test. Calls made inside ``torch.optim`` are
left out: the optimisers keep their step counters on the host, where ``.item()`` costs
nothing. (``.tolist()``, ``.numpy()`` and ``.cpu()`` do not dispatch on the CPU, so they
are not seen.)
"""

from __future__ import annotations

import traceback
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique")


class HostSyncs(TorchDispatchMode):
    """``with HostSyncs() as s: ...``; then ``s.where`` lists ``file:line code`` of each sync, outside torch."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(SYNC_OPS):
            stack = traceback.extract_stack()[:-1]
            if not any("/torch/optim/" in fr.filename for fr in stack):
                caller = next((fr for fr in reversed(stack) if "/torch/" not in fr.filename), stack[-1])
                self.where.append(f"{Path(caller.filename).name}:{caller.lineno} {caller.line}")
        return func(*args, **(kwargs or {}))
