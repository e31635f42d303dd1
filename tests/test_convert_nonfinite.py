"""A NaN or Inf in a quantized weight: its blocks come out NaN (the peers' bytes, kept), it has
no SQNR, and the result says so: listed first by `worst()` and in the summary, named in a
`note:`. Oracle: the source tensors as the safetensors package reads them (which hold NaN/Inf)."""

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import llama_like, read_folder, save_checkpoint  # noqa: E402

from mxquant.checkpoint import convert  # noqa: E402
from mxquant.cli import main  # noqa: E402

UP, DOWN = "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"


@pytest.fixture
def src(tmp_path):
    tensors = llama_like(layers=1)
    tensors[UP][3, 5] = float("nan")
    tensors[DOWN][0, 0] = float("inf")
    save_checkpoint(tmp_path / "src", tensors)
    return tmp_path / "src"


def test_non_finite_tensors_come_first_and_are_named(src, tmp_path, capsys):
    source = read_folder(src)
    bad = sorted(n for n, t in source.items() if t.is_floating_point() and not t.isfinite().all())
    assert bad == [DOWN, UP]
    r = convert(src, tmp_path / "dst", device="cpu")
    assert sorted(e["name"] for e in r.worst(2)) == bad
    assert all(e["sqnr_db"] is not None for e in r.worst(5)[2:])
    assert any(n.startswith("2 quantized tensor(s) hold NaN or Inf") and DOWN in n and UP in n for n in r.notes)
    out = read_folder(tmp_path / "dst")
    assert out[UP].float().isnan().any()  # the bytes stay the scheme's: NaN blocks
    assert main(["convert", str(src), str(tmp_path / "dst2"), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "note: 2 quantized tensor(s) hold NaN or Inf" in text and "NaN/Inf" in text.split("lowest SQNR")[1]
