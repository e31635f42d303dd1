"""An in-process plugin for tests: registers the Backend / BackendSpec objects it is given
(and then raises `fail`, if given one: a plugin whose hook breaks)."""

import mxquant


class Plugin:
    def __init__(self, *backends, fail=None):
        self.backends, self.fail = backends, fail

    @mxquant.hookimpl
    def register_backends(self, register):
        for b in self.backends:
            register(b)
        if self.fail:
            raise self.fail
