"""torch.vmap over the public calls (review, twenty-eighth session): the C kernel was handed
functorch's wrapped tensors ("Cannot access data pointer of Tensor that doesn't have storage");
now the call goes through the custom op, which torch runs slice by slice. Oracle: mx_oracle's
bytes of each slice."""

import pytest
import torch

import mxquant
from mx_oracle import quantize as oracle_quantize

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


@pytest.mark.parametrize("backend", ["cpu", "cpu-native"])
def test_vmap_quantize_gives_each_slices_bytes(backend):
    x = torch.randn(3, 4, 64)
    data = torch.vmap(lambda t: mxquant.mxfp8_quantize(t, backend=backend).data)(x)
    for i in range(3):
        want, _ = oracle_quantize(x[i], torch.float8_e4m3fn)
        assert torch.equal(data[i].view(torch.uint8), want)
