"""`mxquant convert`: a Hugging Face safetensors checkpoint to a compressed-tensors MXFP8 one
(docs/convert.md). Import cost is nothing until `convert` is called."""

from __future__ import annotations


def convert(src, dst, **kwargs):
    """See mxquant.checkpoint.driver.convert."""
    from .driver import convert as _convert

    return _convert(src, dst, **kwargs)


def __getattr__(name):
    if name in ("ConvertResult", "CheckpointError"):
        from . import driver, stio

        return getattr(driver, name, None) or getattr(stio, name)
    raise AttributeError(name)
