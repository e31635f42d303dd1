"""`mxquant convert` as a new user met it (issue 20, item 5): Ctrl-C, a forced backend that
cannot run here, the speed of a resumed run, a refusal with the progress bar on.
Oracles: the process's exit code and stderr, the state DST is left in."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("safetensors")

from convert_ckpt import llama_like, retarget, save_checkpoint  # noqa: E402
from subproc import child_env  # noqa: E402

from mxquant.checkpoint import convert, driver  # noqa: E402
from mxquant.cli import main  # noqa: E402


@pytest.mark.parametrize("resume", [False, True])
def test_contract_ctrl_c_says_in_one_line_what_is_left(tmp_path, monkeypatch, capsys, resume):
    """Contract: the interrupt is injected inside the second shard's conversion."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=2), shards=2)
    real, calls = driver.quantize_tensor, [0]

    def interrupted(*a, **k):
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(driver, "quantize_tensor", interrupted)
    assert main(["convert", str(src), str(dst), "--quiet"] + (["--resume"] if resume else [])) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mxquant convert: interrupted;"), err
    if resume:
        assert "--resume to continue" in err and (dst / "model-00001-of-00002.safetensors").exists()
    else:
        assert "nothing of this run is left in DST" in err and not dst.exists()


def test_a_forced_backend_that_cannot_run_is_refused_before_any_work(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    p = subprocess.run([sys.executable, "-m", "mxquant", "convert", str(src), str(dst), "--device", "cpu"],
                       env=child_env(MXQUANT_BACKEND="triton"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert err.count("\n") == 0 and "backend 'triton'" in err and "before any work" in err, err
    assert not dst.exists()


def test_a_resumed_finished_run_reports_no_speed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the summary table unwrapped
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    first = convert(src, dst)
    assert first.bytes_converted == first.bytes_in and first.gb_per_s > 0
    assert main(["convert", str(src), str(dst), "--resume", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["shards_converted"], out["shards_resumed"], out["bytes_converted"]) == (0, 2, 0)
    assert out["gb_per_s"] is None
    assert main(["convert", str(src), str(dst), "--resume"]) == 0
    assert "nothing converted: every shard was finished by an earlier run" in capsys.readouterr().out


def test_a_refusal_with_the_progress_bar_on_is_one_line(tmp_path):
    """Without --quiet the bar is made, but starts only after every refusal: stderr is the
    error line alone (it was preceded by the bar's blank line)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    retarget(src, {"model-00001-of-00002.safetensors": "/abs.safetensors"})
    p = subprocess.run([sys.executable, "-m", "mxquant", "convert", str(src), str(tmp_path / "dst")],
                       env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.startswith("mxquant convert: error:") and p.stderr.count("\n") == 1, repr(p.stderr)
