"""When the `triton` backend's column-wise / row+column calls take the Gluon kernel
(backends/_gluon_training.py) and when the Triton one: no GPU and no triton needed."""

import pytest
import torch

from mxquant.backends import _triton_training_ops as ops


def test_gluon_only_with_the_triton_it_ran_with():
    """Gluon changes between Triton releases (3.4's does not compile the kernel, 3.3 has none):
    the Gluon kernel is the default only under the versions in GLUON_TRITON."""
    assert ops.gluon_version_ok("3.6.0") and ops.gluon_version_ok("3.6.1+git1234")
    assert not any(map(ops.gluon_version_ok, ("3.3.1", "3.4.0", "3.5.1", "3.7.0", "4.0.0", "3.60.0")))


@pytest.mark.parametrize("config", [("gluon", 8, 2), ("gluon", 8), ("gluon", 3, 2)])
def test_gluon_configs_off_cuda_are_one_line_errors(config):
    """A Gluon config on a CPU tensor (or a malformed one) is a ValueError naming the config,
    before anything imports triton."""
    x = torch.zeros(128, 128)
    with pytest.raises(ValueError, match=r"config \('gluon'.*the Gluon kernel runs on CUDA with Triton 3\.6"):
        ops.quantize_colwise(x, torch.float8_e4m3fn, "rceil", "linear", config)
