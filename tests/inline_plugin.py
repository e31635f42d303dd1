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


def plugin_record(registry, name):
    """The registry's record of plugin `name`."""
    return next(p for p in registry.plugin_records() if p.name == name)


def quantizes_exactly(**kw) -> bool:
    """Whether mxfp8_quantize (with `kw`) gives the independent oracle's bytes on a random input."""
    import torch

    from mx_oracle import quantize as oracle_quantize

    x = torch.randn(3, 64)
    data, scale = mxquant.mxfp8_quantize(x, **kw)
    want_d, want_s = oracle_quantize(x, torch.float8_e4m3fn)
    return torch.equal(data.view(torch.uint8), want_d) and torch.equal(scale.view(torch.uint8), want_s)
