"""Count the operations that make a GPU wait for the host, while running on the CPU.

On a GPU, ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (all ``aten._local_scalar_dense``)
and ops whose output shape depends on the data (``nonzero``, ``masked_select``, ``unique``)
block until the device catches up. They dispatch the same way on the CPU, so a
``TorchDispatchMode`` can count them in a CPU test. So do copies from a device to the host
(``aten._to_copy`` to the CPU, ``aten.copy_`` into a CPU tensor from another device), but on
the CPU these never happen: ``.cpu()`` of a CPU tensor returns it, and ``.tolist()`` and
``.numpy()`` do not dispatch at all. So, while counting, those three methods are wrapped and
every call counts as one device-to-host copy whatever the tensor's device (what the code does
with a tensor on the CPU, it does with it on a GPU), once per call (the copy a call makes on a
GPU is not counted again). Calls made inside ``torch.optim`` are left out: the optimisers keep
their step counters on the host, where ``.item()`` costs nothing.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique")
HOST_COPY_METHODS = ("cpu", "tolist", "numpy")
_ABSENT = object()


def _device_to_host(func, args, kwargs) -> bool:
    """A copy from a non-CPU device into host memory (seen on a GPU only)."""
    name = str(func)
    if name.startswith("aten._to_copy") and args and isinstance(args[0], torch.Tensor):
        dev = kwargs.get("device")
        return dev is not None and torch.device(dev).type == "cpu" and args[0].device.type != "cpu"
    if name.startswith("aten.copy_") and len(args) > 1 and all(isinstance(a, torch.Tensor) for a in args[:2]):
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


class HostSyncs(TorchDispatchMode):
    """``with HostSyncs() as s: ...``; then ``s.where`` lists ``file:line code`` of each sync, outside torch."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[str] = []
        self._saved: dict[str, object] = {}
        self._in_method = 0

    def _note(self) -> None:
        stack = traceback.extract_stack()[:-2]
        if not any("/torch/optim/" in fr.filename for fr in stack):
            caller = next((fr for fr in reversed(stack) if "/torch/" not in fr.filename), stack[-1])
            self.where.append(f"{Path(caller.filename).name}:{caller.lineno} {caller.line}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._in_method and (str(func).startswith(SYNC_OPS) or _device_to_host(func, args, kwargs)):
            self._note()
        return func(*args, **kwargs)

    def __enter__(self):
        for name in HOST_COPY_METHODS:
            self._saved[name] = torch.Tensor.__dict__.get(name, _ABSENT)
            real = getattr(torch.Tensor, name)

            def counted(tensor, *args, _real=real, **kwargs):
                self._note()
                self._in_method += 1
                try:
                    return _real(tensor, *args, **kwargs)
                finally:
                    self._in_method -= 1

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for name, saved in self._saved.items():
                if saved is _ABSENT:
                    delattr(torch.Tensor, name)
                else:
                    setattr(torch.Tensor, name, saved)
            self._saved.clear()
