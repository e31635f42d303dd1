"""`import mxquant`, the CPU call and `mxquant info` work where no platform package can be
imported, and import none of them: a subprocess installs a meta-path finder that makes
flashinfer, triton, intel_extension_for_pytorch and vllm_xpu_kernels (and their submodules)
raise ImportError, before mxquant is imported."""

import json
import pytest
import re
import subprocess
import sys

from cpu_auto import AUTO_CPU
from hidden_modules import hide

BLOCKED = ("flashinfer", "triton", "intel_extension_for_pytorch", "vllm_xpu_kernels")

pytestmark = pytest.mark.usefixtures("cpu_only")  # a CPU-only machine, as CI is (conftest.py)

SCRIPT = hide(*BLOCKED) + r"""
BLOCKED = %r

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)

for name in BLOCKED:  # the blocker works
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} imported despite the blocker")

import contextlib, io, json
import mxquant
after_import = loaded()

import torch
from mxquant import reference
x = torch.randn(3, 4, 64, dtype=torch.bfloat16)
data, scale = mxquant.mxfp8_quantize(x)
ref = reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
exact = torch.equal(data.view(torch.uint8), ref[0].view(torch.uint8)) and torch.equal(
    scale.view(torch.uint8), ref[1].view(torch.uint8))
y = mxquant.mxfp8_dequantize(data, scale)
after_call = loaded()

import mxquant.cli
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = mxquant.cli.main(["info", "--json"])
print(json.dumps({"after_import": after_import, "after_call": after_call, "exact": exact, "rc": rc,
                  "dequantized": str(y.dtype), "after_info": loaded(), "report": json.loads(buf.getvalue())}))
""" % (BLOCKED,)


def test_no_platform_package_needed_or_imported():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["after_import"] == [] and out["after_call"] == [] and out["after_info"] == []
    assert out["exact"] and out["dequantized"] == "torch.bfloat16" and out["rc"] == 0

    report = out["report"]
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["cpu"]["availability"] == [{"device": "cpu", "available": True, "reason": None}]
    for name in ("triton", "flashinfer", "xpu"):
        availability = backends[name]["availability"]
        assert availability, f"{name}: no device type reported"
        for a in availability:
            assert a["available"] is False, (name, a)
            # the import error (of the backend module or of its platform package), or no such device
            assert re.search(r"import|no module|no cuda|no intel xpu|device", a["reason"], re.I), (name, a)
    assert [(r["device"], r["backend"]) for r in report["resolution"]] == [("cpu", AUTO_CPU)]
