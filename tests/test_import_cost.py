"""`import mxquant` registers no torch custom op and imports none of the modules that do
(mxquant/lazy_ops.py): each registration costs about a millisecond and ~115 long-lived objects,
and twelve of them at import tipped Python into a full garbage collection over torch's objects
(docs/performance.md). What must still hold, each checked in a fresh interpreter: every op is
found as torch.ops.mxquant.<name> on first lookup (a loaded torch.export program included), every
public function compiles with fullgraph=True and takes an input that requires grad as the first
thing the interpreter does, and the lazily imported public names behave like the others."""

import json
import pathlib
import re
import subprocess
import sys

import pytest
import torch

import mxquant
from mxquant.lazy_ops import OP_MODULES
from subproc import child_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
OP_DEFINERS = ("mxquant.custom_ops", "mxquant.custom_ops_training", "mxquant.custom_ops_fp4", "mxquant.fake_quant",
               "mxquant.tile_scales")


def _child(script: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_registers_no_custom_op():
    out = _child(r"""
import json, sys, torch, torch.library
calls = []
real = torch.library.custom_op
def counting(name, *args, **kwargs):
    calls.append(name)
    return real(name, *args, **kwargs)
torch.library.custom_op = counting
import mxquant
from torch._library.custom_ops import OPDEFS
print(json.dumps({"calls": calls, "registered": sorted(k for k in OPDEFS if k.startswith("mxquant::")),
                  "modules": sorted(m for m in sys.modules if m.startswith("mxquant.")),
                  "namespace": type(torch.ops.mxquant).__name__}))
""")
    assert out["calls"] == [] and out["registered"] == []
    assert not set(OP_DEFINERS) & set(out["modules"]), out["modules"]
    assert out["namespace"] == "_MxquantNamespace"  # this torch takes the lazy namespace (else all ops load at import)


def test_op_map_names_every_op_where_it_is_defined():
    defined = {}
    for path in (ROOT / "mxquant").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in re.findall(r"custom_op\(\s*[\"']mxquant::(\w+)[\"']", path.read_text()):
            defined[name] = module
    assert defined and defined == OP_MODULES


def test_every_op_found_on_first_lookup_in_a_fresh_interpreter():
    out = _child(r"""
import json, torch, mxquant
from mxquant.lazy_ops import OP_MODULES
from torch._library.custom_ops import OPDEFS
schemas = {name: str(getattr(torch.ops.mxquant, name).default._schema) for name in sorted(OP_MODULES)}
try:
    torch.ops.mxquant.no_such_op
    missing = "found"
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({"schemas": schemas, "missing": missing,
                  "registered": sorted(k for k in OPDEFS if k.startswith("mxquant::"))}))
""")
    assert out["registered"] == sorted(f"mxquant::{n}" for n in OP_MODULES)
    assert out["schemas"] == {n: str(getattr(torch.ops.mxquant, n).default._schema) for n in OP_MODULES}
    assert "no attribute 'no_such_op'" in out["missing"]


def test_public_functions_compile_and_take_grad_inputs_as_first_use():
    # Each call below is the first use of its op's module: the op is looked up while dynamo traces.
    out = _child(r"""
import json, torch, mxquant
from torch._library.custom_ops import OPDEFS
u8 = lambda t: t.view(torch.uint8) if t.element_size() == 1 else t
def flat(o):
    return [u for t in (o if isinstance(o, tuple) else (o,)) for u in (t if isinstance(t, tuple) else (t,))]
x = torch.randn(64, 96, dtype=torch.bfloat16)
ends = torch.tensor([32, 64], dtype=torch.int32)
calls = {
    "mxfp8_quantize": lambda x: mxquant.mxfp8_dequantize(*mxquant.mxfp8_quantize(x)),
    "mxfp8_quantize_2d": lambda x: mxquant.tile_scales_to_rowwise(mxquant.mxfp8_quantize_2d(x).scale),
    "mxfp8_fake_quantize": lambda x: mxquant.mxfp8_fake_quantize(x),
    "mxfp4_quantize": lambda x: mxquant.mxfp4_dequantize(*mxquant.mxfp4_quantize(x)),
}
same, counts = {}, {}
for name, f in calls.items():
    before = sum(k.startswith("mxquant::") for k in OPDEFS)
    got = flat(torch.compile(f, fullgraph=True, backend="aot_eager")(x))
    counts[name] = sum(k.startswith("mxquant::") for k in OPDEFS) - before
    same[name] = all(torch.equal(u8(a), u8(b)) for a, b in zip(got, flat(f(x))))
w = torch.nn.Parameter(torch.randn(64, 64))  # requires grad: through the op, no gradient
grad = {"rowcol": [t.requires_grad for t in flat(mxquant.mxfp8_quantize_rowcol(w))],
        "nvfp4": [t.requires_grad for t in flat(mxquant.nvfp4_quantize(w))]}
print(json.dumps({"same": same, "counts": counts, "grad": grad}))
""")
    assert all(out["same"].values()), out["same"]
    # the op modules were registered by the traced call itself: 2 + (5 training + 1 tile) + 1 + 4
    assert out["counts"] == {"mxfp8_quantize": 2, "mxfp8_quantize_2d": 6, "mxfp8_fake_quantize": 1,
                             "mxfp4_quantize": 4}
    assert out["grad"] == {"rowcol": [False] * 4, "nvfp4": [False] * 3}


def test_exported_program_loads_where_only_mxquant_is_imported(tmp_path):
    class M(torch.nn.Module):
        def forward(self, x):
            return mxquant.mxfp8_quantize_rowcol(x)[1].data, mxquant.nvfp4_quantize(x).data

    x = torch.randn(64, 96)
    path = tmp_path / "program.pt2"
    torch.export.save(torch.export.export(M(), (x,)), path)
    torch.save(x, tmp_path / "x.pt")
    out = _child(rf"""
import json, torch, mxquant
ep = torch.export.load({str(path)!r})
x = torch.load({str(tmp_path / "x.pt")!r})
col, packed = ep.module()(x)
print(json.dumps({{"col": col.view(torch.uint8).flatten().tolist(), "packed": packed.flatten().tolist()}}))
""")
    # the transpose identity: column-wise is row-wise of the transposed copy; NVFP4 against its eager call
    assert out["col"] == mxquant.mxfp8_quantize(x.mT.contiguous()).data.view(torch.uint8).flatten().tolist()
    assert out["packed"] == mxquant.nvfp4_quantize(x).data.flatten().tolist()


def test_lazy_public_names():
    assert {"mxfp8_fake_quantize", "tile_scales_to_rowwise", "tile_scales_to_colwise"} <= set(dir(mxquant))
    from mxquant import mxfp8_fake_quantize, tile_scales_to_colwise  # noqa: F401

    assert mxquant.tile_scales_to_rowwise.__module__ == "mxquant.tile_scales"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        mxquant.no_such_name
