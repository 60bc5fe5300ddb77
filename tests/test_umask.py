"""Atomic writes read the process umask without changing it."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from audiovae.utils import _umask, atomic_write_text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
def test_umask_is_read_without_being_changed(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        calls = []
        real_umask = os.umask
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real_umask(m))
        assert _umask() == 0o027
        atomic_write_text(tmp_path / "a.txt", "x")
        # the file gets the mode an ordinary open() gives under this umask
        with open(tmp_path / "ref.txt", "w") as fh:
            fh.write("x")
        mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
        assert mode == stat.S_IMODE((tmp_path / "ref.txt").stat().st_mode) == 0o640
        assert calls == [], "the umask was set (for a moment, for every thread) just to read it"
        monkeypatch.undo()
        assert os.umask(0o027) == 0o027  # still what the caller set
    finally:
        os.umask(old)
