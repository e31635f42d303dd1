"""`mxquant convert SRC DST`: the subcommand (add_parser / run), its progress bar and summary.

Exit codes: 0 done; 2 refused (bad arguments, a checkpoint it will not convert, a DST in use
by another run: one line on stderr, nothing written); 1 failed while writing (a full disk, an
I/O error: one line on stderr; a DST this run created is removed, under --resume finished
shards stay and DST is left incomplete)."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkpoint.fmt import SCALE_MODES
from ..checkpoint.schemes import DEFAULT, SCHEMES

HELP = ("convert a Hugging Face safetensors checkpoint to compressed-tensors MXFP8, MXFP4, NVFP4A16 or "
        "FP8 block (docs/convert.md)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help=HELP, description=HELP)
    p.add_argument("src", help="folder of the source checkpoint (model.safetensors or shards + index)")
    p.add_argument("dst", help="output folder (new or empty; never inside SRC)")
    p.add_argument("--ignore", action="append", default=[], metavar="NAME",
                   help="module to leave unquantized: an exact module name or re:<regex> (repeatable)")
    p.add_argument("--quantize-lm-head", action="store_true", help="quantize lm_head too (default: keep it)")
    p.add_argument("--scheme", default=DEFAULT, choices=list(SCHEMES),
                   help="mxfp8 (default), mxfp4, nvfp4a16 (4-bit weights, 16-bit activations) or fp8-block "
                        "(128x128 block scales): the bytes of llm-compressor's model_free_ptq for each")
    p.add_argument("--scale-mode", default="compressed-tensors", choices=SCALE_MODES,
                   help="E8M0 scale rule (mxfp8, mxfp4): compressed-tensors/llm-compressor bytes (default) or "
                        "rceil (vLLM online / FlashInfer bytes)")
    p.add_argument("--device", default="auto", help="cpu, cuda, xpu or auto (default: the first of cuda, xpu, cpu here)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty DST")
    p.add_argument("--resume", action="store_true", help="keep shards a previous run finished (checked "
                   "against its manifest) and convert the rest")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="shards converted at once (default: 2 on a GPU host with 8+ cores per rank, else 1)")
    p.add_argument("--no-verify", action="store_true", help="skip re-reading each written shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)
    return p


def _size(n: int) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def _summary(result, console) -> None:
    from rich.table import Table

    t = Table(title=f"mxquant convert -> {result.dst}", show_header=False)
    t.add_row("quantized tensors", str(len(result.quantized)))
    reasons: dict[str, int] = {}
    for r in result.skipped.values():
        reasons[r] = reasons.get(r, 0) + 1
    for r, n in sorted(reasons.items()):
        t.add_row(f"kept: {r}", str(n))
    t.add_row("config ignore", ", ".join(result.ignore))
    t.add_row("bytes in / out", f"{_size(result.bytes_in)} / {_size(result.bytes_out)}")
    t.add_row("shards converted / resumed", f"{result.shards_done} / {result.shards_resumed}")
    rate = (f"{_size(result.gb_per_s * 1e9)}/s of converted input" if result.bytes_converted
            else "nothing converted: every shard was finished by an earlier run")
    t.add_row("time", f"{result.seconds:.2f} s ({rate})")
    t.add_row("manifest", result.manifest_path)
    console.print(t)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)
    worst = result.worst(5)
    if worst:
        w = Table(title="lowest SQNR (dequantized vs original)")
        w.add_column("tensor")
        w.add_column("shape")
        w.add_column("SQNR dB", justify="right")
        w.add_column("rel. error", justify="right")
        for e in worst:
            finite = not e.get("nonfinite")
            w.add_row(e["name"], "x".join(map(str, e["shape"])), f"{e['sqnr_db']:.2f}" if finite else "NaN/Inf",
                      f"{e['rel_error']:.4f}" if finite else "-")
        console.print(w)


def _as_json(result) -> dict:
    return {"src": result.src, "dst": result.dst, "quantized": result.quantized, "skipped": result.skipped,
            "ignore": result.ignore, "bytes_in": result.bytes_in, "bytes_out": result.bytes_out,
            "seconds": result.seconds, "bytes_converted": result.bytes_converted,
            "gb_per_s": result.gb_per_s if result.bytes_converted else None, "shards_converted": result.shards_done,
            "shards_resumed": result.shards_resumed, "manifest": result.manifest_path,
            "peak_rss_bytes": result.peak_rss_bytes, "notes": result.notes,
            "worst_sqnr": [{k: e[k] for k in ("name", "sqnr_db", "rel_error")} for e in result.worst(5)]}


def run(args) -> int:
    from ..checkpoint.dist import launcher

    from ..checkpoint.stio import CheckpointError

    rank0 = launcher()[0] == 0
    show = rank0 and not (args.quiet or args.json)
    try:
        from ..checkpoint.driver import convert

        kwargs = dict(ignore=args.ignore, quantize_lm_head=args.quantize_lm_head, scale_mode=args.scale_mode,
                      scheme=args.scheme,
                      device=args.device, overwrite=args.overwrite, resume=args.resume, verify=not args.no_verify,
                      jobs=args.jobs)
        if show:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                       TransferSpeedColumn)

            bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                           transient=True)
            task = []  # the bar starts at the first progress call, after every refusal: a refusal stays one line

            def progress(n, total=None):
                if not task:
                    bar.start()
                    task.append(bar.add_task("converting", total=None))
                bar.update(task[0], advance=n, **({"total": total} if total is not None else {}))

            try:
                result = convert(args.src, args.dst, progress=progress, **kwargs)
            finally:
                if task:
                    bar.stop()
            _summary(result, Console())
        else:
            result = convert(args.src, args.dst, **kwargs)
    except CheckpointError as e:
        print(f"mxquant convert: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk, not the checkpoint (ENOSPC, EIO): cleaned up, one line
        print(f"mxquant convert: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # cleaned up by convert(); say what is left
        kept = ("finished shards are kept in DST; run the same command with --resume to continue" if args.resume
                else "nothing of this run is left in DST; with --resume a run keeps its finished shards when stopped")
        print(f"mxquant convert: interrupted; {kept}", file=sys.stderr)
        return 130
    if args.json and rank0:
        print(json.dumps(_as_json(result), indent=1))
    return 0
