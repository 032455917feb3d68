"""``edgeseq quantize``: parse options, call :func:`edgeseq.quantize.quantize`, print."""

from __future__ import annotations

import click

from ..quantize.data import CALIBRATION_SAMPLES
from ..quantize.modes import CALIBRATION_METHODS
from .options import TOLERANCE


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Quantized ONNX file to write.")
@click.option("--mode", type=click.Choice(["auto", "dynamic", "static", "fp16"]), default="auto", show_default=True,
              help="dynamic: INT8 weights; static: INT8 with calibrated activations (needs --calibration); "
                   "fp16: float16 weights (runs on CPU); auto: choose from the model's layers and say why.")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="Calibration inputs (.npz with x[, lengths], or .npy); --calibration-samples evenly spaced ones are used.")
@click.option("--eval", "eval_data", type=click.Path(dir_okay=False),
              help="Eval set (.npz with x, y[, lengths]): refuse to write when the task metric drops more than --max-drop.")
@click.option("--max-drop", type=TOLERANCE,
              help="Largest acceptable loss: accuracy as a fraction (default 0.01 = 1 point) or relative MAE (default 0.05).")
@click.option("--per-channel/--no-per-channel", default=False, show_default=True, help="One INT8 scale per output channel.")
@click.option("--reduce-range", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="7-bit INT8 weights; auto: yes on x86 CPUs without VNNI (quantize on, or for, the target CPU).")
@click.option("--calibration-method", type=click.Choice(list(CALIBRATION_METHODS)), default="minmax", show_default=True)
@click.option("--calibration-samples", type=click.IntRange(min=1), default=CALIBRATION_SAMPLES, show_default=True)
@click.option("--target", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the file will run (auto picks fp16 for cuda).")
def quantize(model: str, output: str, mode: str, calibration: str | None, eval_data: str | None,
             max_drop: float | None, per_channel: bool, reduce_range: str, calibration_method: str,
             calibration_samples: int, target: str) -> None:
    """Quantize MODEL (a float ONNX file from 'edgeseq export'); write -o only if it keeps the accuracy."""
    from ..quantize import quantize as do_quantize

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    r = do_quantize(model, output, mode=mode, calibration=calibration, eval_data=eval_data, max_drop=max_drop,
                    per_channel=per_channel, reduce_range=reduce_range, calibration_method=calibration_method,
                    calibration_samples=calibration_samples, target=target, log=log)
    for note in r.notes:
        if not note.startswith("auto:"):
            log(note)
    settings = r.card["quantization"]["settings"]
    extra = f"; reduce_range {'on' if settings['reduce_range'] else 'off'}" if "reduce_range" in settings else ""
    click.echo(f"wrote {r.path} ({r.precision}: {r.bytes / 1024:.0f} KiB = {r.size_ratio:.2f}x of "
               f"{r.float_bytes / 1024:.0f} KiB{extra}; {r.seconds:.1f}s)")
