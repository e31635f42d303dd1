"""`mxquant convert`: a Hugging Face safetensors checkpoint to a compressed-tensors MXFP8 one
(docs/convert.md). Importing this package imports nothing heavy; `convert` loads the rest."""

from __future__ import annotations


def convert(src, dst, **kwargs):
    """See mxquant.checkpoint.driver.convert."""
    from .driver import convert as _convert

    return _convert(src, dst, **kwargs)


def __getattr__(name):
    if name == "ConvertResult":
        from .driver import ConvertResult

        return ConvertResult
    if name == "CheckpointError":
        from .stio import CheckpointError

        return CheckpointError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
