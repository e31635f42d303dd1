"""`mxquant eval SRC DST`: what converting SRC to DST (any `mxquant convert --scheme`) cost in accuracy,
measured by running both models (docs/eval.md). Importing this package imports nothing heavy
(no transformers); `evaluate` loads the rest."""

from __future__ import annotations


def evaluate(src, dst, **kwargs):
    """See mxquant.evaluate.run.evaluate."""
    from .run import evaluate as _evaluate

    return _evaluate(src, dst, **kwargs)
