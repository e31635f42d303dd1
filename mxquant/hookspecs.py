"""The plugin surface: pluggy markers and the one hook a backend plugin implements.

    @mxquant.hookimpl
    def register_backends(register):
        register(mxquant.Backend(...))        # or a lazy mxquant.BackendSpec(...)

See docs/writing-a-backend.md."""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "mxquant"
ENTRY_POINT_GROUP = "mxquant.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    @hookspec
    def register_backends(self, register: Callable) -> None:
        """Call `register(backend)` once per backend, with an `mxquant.Backend` or an
        `mxquant.BackendSpec`."""
