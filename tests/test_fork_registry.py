"""Fork while another thread holds the registry's lock (issue 19, item 7): the lock stays held
forever in the child, where that thread does not exist, and the child's first resolution
deadlocked in registry.lookup. The registry renews its lock in a forked child (forking.py)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

import mxquant
from mx_oracle import quantize as oracle_quantize
from subproc import forked_child_result

pytestmark = [pytest.mark.usefixtures("cpu_only"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")]


def _child(x, queue):
    d, s = mxquant.mxfp8_quantize(x)  # a signature the parent never resolved: needs the lock
    queue.put((d.view(torch.uint8).tolist(), s.view(torch.uint8).tolist()))  # plain data: the child exits at once


def test_fork_while_another_thread_holds_the_registry_lock(registry):
    registry.entries()  # discovery done: the child only resolves
    holding, release = threading.Event(), threading.Event()

    def hold():
        with registry._lock:
            holding.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        x = torch.randn(5, 64)
        data, scale = forked_child_result(_child, (x,), "registry.lookup", timeout=30)
    finally:
        release.set()
        holder.join()
    want_d, want_s = oracle_quantize(x, torch.float8_e4m3fn)
    assert data == want_d.tolist() and scale == want_s.tolist()
