"""``edgeseq bench``: time an exported file against PyTorch, plain ONNX Runtime and OpenVINO."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--against", help="PyTorch model REF (file.py:factory or pkg.mod:factory) to time in the same process.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights for --against (.pt state dict or .safetensors).")
@click.option("--batch-sizes", default="1,64", show_default=True)
@click.option("--lengths", default="1,100,1000", show_default=True, help="Sequence lengths (time steps).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Intra-op threads for every runtime (equal thread counts keep ratios fair).")
@click.option("--runtimes", default="edgeseq,onnxruntime-default,openvino", show_default=True,
              help="Peers to time: edgeseq, onnxruntime-default, openvino, openvino-f32.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False),
              help="Real samples (.npy/.npz/...) tiled to each batch x length (default: random inputs).")
@click.option("--seconds", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Time budget per case and runtime.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--allow-pickle", is_flag=True, help="Trust the files: --against may be a whole model saved with "
              "torch.save(model), --weights may hold Python objects. Unpickling runs code from the file.")
def bench(model: str, against: str | None, weights: str | None, batch_sizes: str, lengths: str, threads: int,
          runtimes: str, input_path: str | None, seconds: float, json_out: str | None, allow_pickle: bool) -> None:
    """Time MODEL over batch sizes x lengths (median and p99) and print speed-ups.

    Example: edgeseq bench motion.onnx --against models/motion_lstm.py:build --lengths 100
    """
    from ..benchmark import bench_file, format_report, report_json
    from ..errors import InputError
    from ..inputs import parse_int_list
    from ..runtime.io import atomic_path, read_input, refuse_overwrite

    refuse_overwrite(json_out, "--json", {"the model": model, "--against": against, "--weights": weights,
                                          "--input": input_path})
    sample = None
    if input_path:
        batch = read_input(input_path)
        sample = [batch.x if batch.x.ndim > 1 else batch.x[None]]
    names = [r.strip() for r in runtimes.split(",") if r.strip()]
    if not names:
        raise click.UsageError("--runtimes names none; give some of edgeseq, onnxruntime-default, openvino")
    if weights and not against:
        raise click.UsageError("--weights goes with --against (the PyTorch model to time); add --against REF")
    report = bench_file(model, against, weights=weights, batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
                        lengths=parse_int_list(lengths, "--lengths"), threads=threads, runtimes=names, sample=sample,
                        budget_s=seconds, log=lambda m: click.echo(m, err=True), allow_pickle=allow_pickle)
    click.echo(format_report(report))
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(report_json(report), indent=2) + "\n")
    torch_cases = [c for c in report.cases if c.runtime == "pytorch"]
    if against and (not torch_cases or all(c.skipped for c in torch_cases)):  # asked for a comparison, got none
        reason = report.runtimes.get("pytorch", {}).get("skipped") or (torch_cases[0].skipped if torch_cases else "")
        raise InputError(f"PyTorch ({against}) ran no case, so nothing was compared ({reason[:200]}); is --against "
                         f"the model {model} was exported from?")
    if report.cases and all(c.skipped for c in report.cases):  # a CI step must not read this as a measurement
        raise InputError(f"nothing was timed: every case was skipped ({report.cases[0].skipped}); give --batch-sizes "
                         "and --lengths the file takes, or --input with real data")
