"""`mxquant eval SRC DST`: the subcommand (add_parser / run) and its tables.

Exit codes: 0 measured; 2 refused (bad arguments, DST not SRC converted to compressed-tensors
one of its schemes, transformers missing, not enough memory: one line on stderr); 130 interrupted."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkpoint.fmt import SCALE_MODES

HELP = ("what converting SRC to the checkpoint DST (any --scheme) cost in accuracy: both models run on the same "
        "tokens (docs/eval.md)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help=HELP, description=HELP)
    p.add_argument("src", help="folder of the source checkpoint (what `mxquant convert` read)")
    p.add_argument("dst", help="folder of the converted checkpoint (what `mxquant convert` wrote)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--text", metavar="F", help="a UTF-8 text file, tokenized with SRC's tokenizer (perplexity "
                      "is reported); default: random tokens")
    data.add_argument("--input-ids", metavar="F", help="a JSON list of token-id lists, each a sequence used as given")
    p.add_argument("--batch", type=int, default=4, help="sequences per forward pass (default 4)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence for random tokens and --text "
                   "windows (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tokens (default 0)")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, xpu or auto (default: the first of cuda, xpu, cpu here)")
    p.add_argument("--fake-quant-activations", action="store_true", help="the converted model's quantized layers "
                   "read inputs rounded as the scheme's activations (MXFP8, MXFP4, FP8 block; not nvfp4a16), as "
                   "vLLM on Blackwell (default: unquantized inputs, as vLLM on Hopper)")
    p.add_argument("--activation-scale-mode", default=None, choices=SCALE_MODES,
                   help="E8M0 rule of MXFP8 / MXFP4 fake-quantized activations (default rceil: vLLM's / FlashInfer's)")
    p.add_argument("--layers", type=int, default=10, metavar="N", help="rows of the per-layer table (default 10; "
                   "--json lists all)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)
    return p


def _db(v) -> str:
    return "identical" if v is None else f"{v:.2f}"


def _tables(r, console, rows: int) -> None:
    from rich.table import Table

    t = Table(title=f"mxquant eval {r.src} -> {r.dst}", show_header=False)
    t.add_row("inputs", f"{r.inputs['kind']}: {r.inputs['sequences']} sequence(s), {r.inputs['tokens']} tokens"
              + (f", seed {r.inputs['seed']}" if "seed" in r.inputs else ""))
    t.add_row("run", f"{r.device}, {r.dtype}; --scheme {r.scheme}; activations "
              + (f"fake-quantized ({r.activation_scale_mode or 'amax / 448'})" if r.fake_quant_activations
                 else "unquantized"))
    t.add_row("logits relative error", f"{r.logits_rel_error:.4g}")
    t.add_row("top-1 agreement", f"{r.top1_agreement:.4%}")
    t.add_row("KL(source || converted)", f"{r.kl_divergence:.4g} nats / position")
    if r.perplexity:
        t.add_row("perplexity source / converted", f"{r.perplexity['source']:.4f} / {r.perplexity['converted']:.4f}")
    t.add_row("time", f"{r.seconds:.2f} s")
    console.print(t)
    for note in r.notes:
        console.print(f"note: {note}", soft_wrap=True)
    if r.layers:
        w = Table(title=f"per-layer output SQNR, worst first ({min(rows, len(r.layers))} of {len(r.layers)})")
        w.add_column("layer")
        w.add_column("SQNR dB", justify="right")
        w.add_column("rel. error", justify="right")
        for e in r.layers[:rows]:
            w.add_row(e["name"], _db(e["output_sqnr_db"]),
                      "-" if e["output_rel_error"] is None else f"{e['output_rel_error']:.4g}")
        console.print(w)


def run(args) -> int:
    from ..checkpoint.stio import CheckpointError
    from .render import stdout_console

    kwargs = dict(text=args.text, input_ids=args.input_ids, batch=args.batch, seq_len=args.seq_len, seed=args.seed,
                  device=args.device, fake_quant_activations=args.fake_quant_activations,
                  activation_scale_mode=args.activation_scale_mode)
    status = None
    try:
        if args.layers < 0:
            raise CheckpointError(f"--layers must be 0 or more (got {args.layers})")
        from ..evaluate import evaluate

        if not (args.quiet or args.json):
            from rich.console import Console

            status = Console(stderr=True).status("mxquant eval")
            status.start()
            kwargs["progress"] = lambda message: status.update(f"mxquant eval: {message}")
        try:
            result = evaluate(args.src, args.dst, **kwargs)
        finally:
            if status is not None:
                status.stop()
    except CheckpointError as e:
        print(f"mxquant eval: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mxquant eval: interrupted (nothing is written)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.as_json(), indent=1))
    else:
        _tables(result, stdout_console(), args.layers)
    return 0
