"""Command line: a thin layer that parses options, calls one public function, and prints.

Library code raises :class:`edgeseq.EdgeseqError`; only this module turns it into
``Error: ...`` on stderr and exit status 1.  Usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import errno
import json
import signal
import sys
from typing import Any

import click

from . import __version__
from .commands.options import TOLERANCE
from .errors import EdgeseqError


def _parse_static(items: tuple[str, ...]) -> dict[str, list[float]]:
    """``("meta=1,2,3",)`` -> ``{"meta": [1.0, 2.0, 3.0]}`` (``--static``)."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not sep or not name.strip() or not values:
            raise click.BadParameter(f"{item!r}: expected NAME=V1,V2,... (numbers), e.g. meta=0.5,1,2",
                                     param_hint="--static")
        out[name.strip()] = values
    return out


def _err(msg: str) -> None:
    click.echo(msg, err=True)


# Commands that live in their own modules, imported only when used (keeps start-up small).
LAZY_COMMANDS = {
    "quantize": "edgeseq.commands.quantize:quantize",
    "bench": "edgeseq.commands.bench:bench",
    "doctor": "edgeseq.commands.doctor:doctor",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | {n for n in LAZY_COMMANDS if self._lazy(n)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._lazy(name)

    @staticmethod
    def _lazy(name: str) -> click.Command | None:
        import importlib

        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                return None  # command not available in this build
            raise

    def invoke(self, ctx: click.Context) -> Any:
        import warnings

        from .signals import sigterm_as_interrupt

        # PyTorch's own warnings (deprecations, "LSTM with projections is not supported with oneDNN") are about its
        # internals, not the user's command: they broke the one-line output around edgeseq's messages
        for category in (UserWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=r"torch(\.|$)")

        try:
            with sigterm_as_interrupt():  # `kill` cleans up like Ctrl-C: no temporary or partial files left
                return super().invoke(ctx)
        except EdgeseqError as exc:
            _err(f"Error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            ctx.exit(1)
        except KeyboardInterrupt as exc:
            # Output files are written atomically; what went to stdout before the interrupt is already out
            terminated = bool(exc.args) and str(exc.args[0]) == f"signal {signal.SIGTERM}"
            what = "Terminated" if terminated else "Interrupted"
            _err(f"{what}; the lines printed so far are complete, the rest was not computed."
                 if ctx.meta.get("edgeseq.prints_results") else f"{what}; no partial output was written.")
            ctx.exit(143 if terminated else 130)  # 128 + the signal, as a shell reports it
        except BrokenPipeError:  # e.g. `edgeseq infer ... | head`: the reader left; stop quietly
            import os

            try:  # point stdout at /dev/null so the interpreter's final flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            ctx.exit(141)
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            _err(f"Error: {where}could not write ({exc.strerror}); no partial output file was left")
            ctx.exit(1)


# the machine's, not edgeseq's: a full disk or /dev/full, a read-only or failing device, a quota
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeseq")
def main() -> None:
    """Export PyTorch sequence models to ONNX, verify them, and run them at the edge."""


ALLOW_PICKLE_HELP = ("Trust the files: REF/--against may be a whole model saved with torch.save(model), and "
                     "--weights may hold Python objects. Unpickling runs code from the file.")


# --------------------------------------------------------------------------------------- export
@main.command()
@click.argument("ref")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict (.pt via weights_only=True, or .safetensors).")
@click.option("--input-shape", help="Example input shape, e.g. 1,100,6 (any rank). Default: model.example_inputs() or inferred.")
@click.option("--dynamic-axes", help="Comma-separated axes that vary (default: batch and sequence).")
@click.option("--time-first/--batch-first", default=None,
              help="The model takes (seq, batch, features) / (batch, seq, features). Default: detected.")
@click.option("--exporter", type=click.Choice(["auto", "torchscript", "dynamo"]), default="auto", show_default=True)
@click.option("--opset", type=click.IntRange(min=14, max=21), help="ONNX opset, 14 to 21 (default 17 for torchscript, 18 for dynamo, which writes 18 at least).")
@click.option("--check/--no-check", default=True, show_default=True, help="Run the parity gate before writing.")
@click.option("--streaming", is_flag=True, help="Add every recurrent layer's state as inputs/outputs (for StreamingSession).")
@click.option("--lengths", "with_lengths", is_flag=True, help="Add a 'lengths' input so zero-padded steps do not change results.")
@click.option("--atol", type=TOLERANCE, help="Parity gate's absolute tolerance (default 1e-5).")
@click.option("--rtol", type=TOLERANCE, help="Parity gate's relative tolerance (default 1e-5).")
@click.option("--allow-pickle", is_flag=True, help=ALLOW_PICKLE_HELP)
def export(ref: str, output: str, weights: str | None, input_shape: str | None, dynamic_axes: str | None,
           time_first: bool | None, exporter: str, opset: int | None, check: bool, streaming: bool, with_lengths: bool,
           atol: float | None, rtol: float | None, allow_pickle: bool) -> None:
    """Export REF to ONNX with dynamic batch and sequence axes.

    REF is path/to/file.py:factory, package.module:factory (with literal arguments if it needs them:
    'net.py:Net(6, hidden=64)'), a TorchScript file (torch.jit.save), a
    torch.export program (.pt2),
    a Keras file (.keras/.h5), or with --allow-pickle a whole model saved with torch.save(model).
    The factory returns an nn.Module. Note: loading a .py file runs its code (a TorchScript file,
    its TorchScript code); only use files you trust. Weights are never unpickled as arbitrary
    objects unless you pass --allow-pickle.

    Nothing is written unless the file matches PyTorch at lengths 1 to twice the example's. A
    Python loop over time is exported as an ONNX Loop (scripted); forward(x, lengths) that packs
    its input gets a 'lengths' input doing what packing did.
    """
    from .inputs import parse_axes, parse_shape

    shape = parse_shape(input_shape) if input_shape else None
    axes = parse_axes(dynamic_axes) if dynamic_axes else None
    if streaming or with_lengths:
        from .export.stateful import export_with_extras

        result = export_with_extras(ref, output, weights=weights, input_shape=shape, dynamic_axes=axes,
                                    time_first=time_first, exporter=exporter, opset=opset, check=check,
                                    streaming=streaming, lengths=with_lengths, log=_err, atol=atol, rtol=rtol,
                                    allow_pickle=allow_pickle)
    else:
        from .export.exporter import export as do_export

        result = do_export(ref, output, weights=weights, input_shape=shape, dynamic_axes=axes, time_first=time_first,
                           exporter=exporter, opset=opset, check=check, log=_err, atol=atol, rtol=rtol,
                           allow_pickle=allow_pickle)
    parity_note = "parity not checked (--no-check)"
    if result.report is not None:
        s = result.report.summary()
        parity_note = f"parity ok: max abs error {s['max_abs']:.2g} over {s['cases']} cases"
    click.echo(f"exported {ref} -> {result.path} (exporter: {result.exporter}; {parity_note}; {result.seconds:.1f}s)")


# ---------------------------------------------------------------------------------------- check
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--against", required=True, help="PyTorch model REF (file.py:factory, pkg.mod:factory, TorchScript "
              "file) or Keras file. "
              "Loading a .py file runs its code: only use files you trust.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict (.pt via weights_only=True, or .safetensors).")
@click.option("--batch-sizes", default="1,3,16", show_default=True)
@click.option("--lengths", default="1,2,17,100,1000", show_default=True)
@click.option("--atol", type=TOLERANCE, help="Absolute tolerance (default per precision: 1e-5 for float32).")
@click.option("--rtol", type=TOLERANCE, help="Relative tolerance (default per precision: 1e-5 for float32).")
@click.option("--eval", "eval_data", type=click.Path(dir_okay=False), help="Eval set (.npz with x, y) to compare task metrics.")
@click.option("--max-drop", type=TOLERANCE, help="Quantized files with --eval: largest metric drop (default 0.01 accuracy, 0.05 relative MAE).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--allow-pickle", is_flag=True, help=ALLOW_PICKLE_HELP)
def check(model: str, against: str, weights: str | None, batch_sizes: str, lengths: str, atol: float | None,
          rtol: float | None, eval_data: str | None, max_drop: float | None, device: str, json_out: str | None,
          allow_pickle: bool) -> None:
    """Compare MODEL (ONNX) with its PyTorch source over a batch x length sweep; exit 0 only if all pass."""
    from .export.check import check as do_check
    from .export.check import criteria
    from .inputs import parse_int_list
    from .runtime.io import atomic_path, refuse_overwrite

    refuse_overwrite(json_out, "--json", {"the model": model, "--against": against, "--weights": weights,
                                          "--eval": eval_data})
    report = do_check(model, against, weights=weights, batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
                      lengths=parse_int_list(lengths, "--lengths"), atol=atol, rtol=rtol, device=device,
                      eval_data=eval_data, max_drop=max_drop, allow_pickle=allow_pickle)
    click.echo(format_parity_table(report))
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.passed:
        failing = len(report.failures)
        if not failing and report.cases and all(c.skipped for c in report.cases):
            _err(f"Error: no case could be compared: {report.cases[0].note}; is --against the model {model} was "
                 "exported from, with the same inputs?")
            sys.exit(1)
        from .export.parity import never_compared, rounding_hint

        if not failing:
            _err(f"Error: parity not proven: {never_compared(report)}")
            sys.exit(1)

        hint = rounding_hint(report) or report.extra.get("hint", "")
        _err(f"Error: parity FAILED in {failing} case(s) ({criteria(report)}){hint}")
        sys.exit(1)
    click.echo(f"parity ok on {report.provider}: all {report.summary()['cases']} cases pass ({criteria(report)})")


def format_parity_table(report: Any) -> str:
    rows = ["batch  length  output   max_abs      max_rel      sqnr_dB   result"]
    for c in report.cases:
        if c.skipped:
            rows.append(f"{c.batch:>5}  {c.length:>6}  {c.output:<7}  {'':<11}  {'':<11}  {'':<8}  skipped: {c.note}")
            continue
        sqnr = "inf" if c.sqnr_db == float("inf") else f"{c.sqnr_db:.1f}"
        verdict = "ok" if c.passed else f"FAIL {c.note}".strip()
        if c.output.startswith("eval:"):  # the task metric's verdict: its numbers are in its note
            verdict = f"{'ok' if c.passed else 'FAIL'}: {c.note}"
            rows.append(f"{c.batch:>5}  {c.length:>6}  {'eval':<7}  {'':<11}  {'':<11}  {'':<8}  {verdict}")
            continue
        batch, length, output = c.batch, c.length, c.output
        if c.output.endswith("*") and not c.batch:  # drift-judged files: every case's outputs pooled into one SQNR
            batch, length, output = "all", "all", f"{c.output[:-1]} (pooled)"
        rows.append(f"{batch:>5}  {length:>6}  {output:<7}  {c.max_abs:<11.3g}  {c.max_rel:<11.3g}  {sqnr:<8}  {verdict}")
    for line in report.extra.get("metric_lines", []):
        rows.append(line)
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------- infer
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "input_path", type=click.Path(dir_okay=False), help="Input .npy/.npz/.csv/.jsonl.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output .npy/.json/.csv (the first output), "
              ".npz (every output, by name); default: stdout, one JSON array per sample.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (default 1: fastest for batch 1 and streaming; more can help big LSTM batches on idle cores).")
@click.option("--allow-nonfinite", is_flag=True, help="Let NaN/Inf inputs through instead of refusing them.")
@click.option("--stream", is_flag=True, help="Read one time step per line from stdin, print one output line per step.")
@click.option("--reset-on-blank", is_flag=True, help="With --stream: an empty line starts a new sequence.")
@click.option("--static", "static", multiple=True, metavar="NAME=V1,V2,...",
              help="With --stream: values of an input without a time axis (forward(x, meta)), for every step; "
              "a stdin line {\"meta\": [...]} changes them.")
@click.option("--max-length", type=click.IntRange(min=1), help="Longest sequence accepted, in steps (default 100000; "
              "memory grows with length).")
def infer(model: str, input_path: str | None, output: str | None, device: str, batch_size: int, threads: int | None,
          allow_nonfinite: bool, stream: bool, reset_on_blank: bool, static: tuple[str, ...],
          max_length: int | None) -> None:
    """Run MODEL on an input file (or, with --stream, on stdin step by step).

    A .npy input is read in chunks and the output written as results come, into a temporary
    file renamed into place when complete: memory stays bounded for big inputs, and an error,
    Ctrl-C or SIGTERM leaves no partial output file. A progress bar shows when stderr is a terminal.
    """
    if (stream or output is None) and (sys.stdout is None or sys.stdout.closed):  # `>&-`: results would vanish
        from .errors import InputError

        raise InputError("stdout is closed, so the results could not be printed; give -o FILE, or redirect stdout")
    if stream:
        ctx = click.get_current_context()
        ctx.meta["edgeseq.prints_results"] = True
        for param, flag in (("input_path", "--input"), ("output", "-o/--output"), ("batch_size", "--batch-size"),
                            ("max_length", "--max-length")):
            if ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE:
                # silently ignoring it would leave the user waiting for a file that never comes
                fix = {"input_path": "pipe the steps into stdin instead (< steps.csv)",
                       "output": "redirect stdout to keep them (> out.jsonl)"}.get(param, "drop it")
                raise click.UsageError(f"{flag} does not go with --stream, which reads stdin and prints a line per "
                                       f"step; {fix}")
        from .runtime.stdin import stream_stdin

        stream_stdin(model, sys.stdin, sys.stdout, device=device, threads=threads, reset_on_blank=reset_on_blank,
                     allow_nonfinite=allow_nonfinite, static=_parse_static(static))
        return
    if static:
        raise click.UsageError("--static goes with --stream; for --input, put every input in one .npz")
    if reset_on_blank:
        raise click.UsageError("--reset-on-blank goes with --stream; a file's samples are separate sequences already")
    if not input_path:
        raise click.UsageError("give --input FILE (or --stream to read steps from stdin)")
    from .runtime.infer import infer_file
    from .runtime.session import MAX_LENGTH

    output = None if output == "-" else output  # the usual spelling of stdout
    click.get_current_context().meta["edgeseq.prints_results"] = not output
    with _Progress(enabled=sys.stderr.isatty()) as progress:
        result = infer_file(model, input_path, output, device=device, batch_size=batch_size, threads=threads,
                            allow_nonfinite=allow_nonfinite, log=_err, text_out=None if output else sys.stdout,
                            progress=progress, max_length=max_length or MAX_LENGTH)
    _err(f"device: {result.device_reason}")
    _err(f"{result.samples} sample(s) on {result.provider} in {result.seconds * 1000:.1f} ms"
         + (f" -> {result.written}" if result.written else ""))


class _Progress:
    """A progress bar on stderr (only when enabled, i.e. stderr is a terminal), fed ``(done, total)``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar, self.done = enabled, None, 0

    def __enter__(self) -> _Progress | None:
        return self if self.enabled else None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="infer", file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# -------------------------------------------------------------------------------------- inspect
@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def inspect(model: str, as_json: bool) -> None:
    """Show MODEL's inputs/outputs (with dynamic dims), operators, size and model card."""
    from .inspect import card_lines, describe

    info = describe(model)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{info['path']}  ({info['size_kib']:.1f} KiB)")
    click.echo("inputs:")
    for t in info["inputs"]:
        click.echo(f"  {t['name']}: {t['dtype']}[{', '.join(map(str, t['shape']))}]")
    click.echo("outputs:")
    for t in info["outputs"]:
        click.echo(f"  {t['name']}: {t['dtype']}[{', '.join(map(str, t['shape']))}]")
    click.echo("operators: " + ", ".join(f"{k} x{v}" for k, v in info["operators"].items()))
    if info["operators_in_loops"]:
        click.echo("  in loop bodies (per step): "
                   + ", ".join(f"{k} x{v}" for k, v in info["operators_in_loops"].items()))
    for line in card_lines(info["card"]):
        click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
