"""Turn the suite's per-model results into summary.json, summary.md and PNG plots."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

TARGETS = {  # name -> (description, required ratio or limit, "min" = at least / "max" = at most)
    "b1_100_best": ("batch 1, 100 steps: best edgeseq precision vs PyTorch", 4.0, "min"),
    "b1_100_float": ("batch 1, 100 steps: edgeseq float vs PyTorch", 1.5, "min"),
    "step": ("streaming step, batch 1: best edgeseq vs PyTorch step with carried state", 15.0, "min"),
    "b64": ("batch 64 throughput at natural length: best edgeseq vs PyTorch", 2.0, "min"),
    "cold_wall": ("cold start of `edgeseq infer`, one sample: wall seconds", 0.5, "max"),
    "cold_rss": ("cold start of `edgeseq infer`, one sample: peak MiB", 100.0, "max"),
    "vs_openvino": ("cases where best edgeseq is ahead of OpenVINO (best of its precisions)", 1.0, "min"),
}
EDGESEQ = ("edgeseq float", "edgeseq int8", "edgeseq fp16")
OPENVINO = ("openvino", "openvino-f32")


def _median(res: dict[str, Any], runtime: str, batch: int, length: int, mode: str = "sequence") -> float | None:
    for c in res.get("cases", []):
        if (c["runtime"], c["batch"], c["length"], c.get("mode", "sequence")) == (runtime, batch, length, mode):
            return c.get("median_s")
    return None


def _best(res: dict[str, Any], names: tuple[str, ...], batch: int, length: int, mode: str = "sequence") -> tuple[str | None, float | None]:
    found = [(t, n) for n in names if (t := _median(res, n, batch, length, mode)) is not None]
    if not found:
        return None, None
    t, n = min(found)
    return n, t


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def model_targets(res: dict[str, Any]) -> dict[str, Any]:
    """The target figures of one model (None where a case could not run)."""
    nat = res.get("natural_length", 1)
    torch100 = _median(res, "pytorch", 1, 100)
    best100_name, best100 = _best(res, EDGESEQ, 1, 100)
    step_name, step = _best(res, EDGESEQ, 1, 1, "step")
    b64_name, b64 = _best(res, EDGESEQ, 64, nat)
    cold = res.get("coldstart", {}).get("edgeseq float", {})
    ahead, total, behind = 0, 0, []
    for c in res.get("cases", []):
        if c["runtime"] != "pytorch":
            continue
        mode = c.get("mode", "sequence")
        _, e = _best(res, EDGESEQ, c["batch"], c["length"], mode)
        ov_name, ov = _best(res, OPENVINO, c["batch"], c["length"], mode)
        if e is None or ov is None:
            continue
        total += 1
        if e < ov:
            ahead += 1
        else:
            behind.append(f"{mode} b{c['batch']}x{c['length']} ({ov / e:.2f}x of {ov_name})")
    return {
        "b1_100_best": _ratio(torch100, best100), "b1_100_best_runtime": best100_name,
        "b1_100_float": _ratio(torch100, _median(res, "edgeseq float", 1, 100)),
        "step": _ratio(_median(res, "pytorch", 1, 1, "step"), step), "step_runtime": step_name,
        "b64": _ratio(_median(res, "pytorch", 64, nat), b64), "b64_runtime": b64_name,
        "cold_wall": cold.get("wall_s"), "cold_rss": cold.get("peak_rss_mib"),
        "vs_openvino": (ahead / total) if total else None, "vs_openvino_cases": f"{ahead}/{total}",
        "behind_openvino": behind,
    }


def met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    _, limit, kind = TARGETS[key]
    return value >= limit if kind == "min" else value <= limit


def summarize(results: list[dict[str, Any]], machine: dict[str, Any], threads: int, seconds: float,
              quick: bool) -> dict[str, Any]:
    per_model = {r["model"]: model_targets(r) for r in results if "cases" in r}
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine, "threads": threads,
        "seconds": round(seconds, 1), "quick": quick,
        "targets": {k: {"what": v[0], "limit": v[1], "kind": v[2]} for k, v in TARGETS.items()},
        "models": per_model,
        "met": {m: {k: met(k, t.get(k)) for k in TARGETS} for m, t in per_model.items()},
        "skipped_models": {r["model"]: r["skipped"] for r in results if "cases" not in r},
    }


def _fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def targets_text(summary: dict[str, Any]) -> str:
    lines = [f"targets ({summary['threads']} thread(s); ✓ met, ✗ missed):"]
    for model, t in summary["models"].items():
        m = summary["met"][model]
        lines.append(
            f"  {model:<16} b1x100 best {_fmt_ratio(t['b1_100_best'])}{_mark(m['b1_100_best'])}  "
            f"float {_fmt_ratio(t['b1_100_float'])}{_mark(m['b1_100_float'])}  "
            f"step {_fmt_ratio(t['step'])}{_mark(m['step'])}  b64 {_fmt_ratio(t['b64'])}{_mark(m['b64'])}  "
            f"cold {_num(t['cold_wall'], 's')}{_mark(m['cold_wall'])} {_num(t['cold_rss'], 'MiB', 0)}{_mark(m['cold_rss'])}  "
            f"ahead of OpenVINO {t['vs_openvino_cases']}")
    return "\n".join(lines)


def _num(v: float | None, unit: str, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f} {unit}"


def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


def markdown(summary: dict[str, Any], results: list[dict[str, Any]]) -> str:
    mach = summary["machine"]
    out = [
        "# edgeseq benchmark results",
        "",
        f"{summary['when']} · {mach.get('cpu')} · {mach.get('cores')} cores · onnxruntime {mach.get('onnxruntime')} · "
        f"**{summary['threads']} intra-op thread(s) for every runtime** (except `onnxruntime-default`: ONNX Runtime's "
        f"own defaults, all cores and spinning) · suite took {summary['seconds']:.0f} s"
        + (" · QUICK smoke run: too few repetitions to judge" if summary["quick"] else ""),
        "",
        "Medians over repeated calls, all runtimes interleaved in one process (`python -m bench.suite`, "
        "`make bench`). The machine is shared: absolute times are noisy, ratios taken in the same run are the signal.",
        "",
        "## Targets (ratio to PyTorch eager, same run, same thread count)",
        "",
    ]
    out += summary_table(summary)
    behind = {m: t["behind_openvino"] for m, t in summary["models"].items() if t["behind_openvino"]}
    if behind:
        out += ["", "Cases where OpenVINO is ahead (OpenVINO's speed as a multiple of edgeseq's best): "
                + "; ".join(f"{m}: {', '.join(v)}" for m, v in behind.items()) + "."]
    out += ["", "![latency vs sequence length](latency_vs_length.png)", "", "![speed-up over PyTorch](speedup.png)", ""]
    for res in results:
        if "cases" not in res:
            out += [f"## {res['model']}: skipped ({res.get('skipped')})", ""]
            continue
        out += _model_section(res)
    return "\n".join(out) + "\n"


def _short(name: str | None) -> str:
    return (name or "–").replace("edgeseq ", "")


def _model_section(res: dict[str, Any]) -> list[str]:
    runtimes = list(dict.fromkeys(c["runtime"] for c in res["cases"]))
    nat = res["natural_length"]
    out = [f"## {res['model']}", "", f"{res['task']}. Natural length {nat} steps.", ""]
    out += ["| case | " + " | ".join(runtimes) + " | best edgeseq vs PyTorch |",
            "| --- | " + " | ".join("---" for _ in runtimes) + " | --- |"]
    keys = list(dict.fromkeys((c.get("mode", "sequence"), c["batch"], c["length"]) for c in res["cases"]))
    for mode, b, n in keys:
        label = f"step (b{b}, 1 step, state carried)" if mode == "step" else f"b{b} × {n}" + (" (natural)" if n == nat else "")
        cells = [_ms(_median(res, r, b, n, mode)) for r in runtimes]
        _, best = _best(res, EDGESEQ, b, n, mode)
        out.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt_ratio(_ratio(_median(res, 'pytorch', b, n, mode), best))} |")
    skipped = {k: v for k, v in res.get("skipped", {}).items()}
    # hardware bound
    macs, peaks = res.get("macs") or {}, res.get("peaks") or {}
    if macs.get("per_step"):
        rates = ", ".join(f"{'batch ' + k if k.isdigit() else 'input products'} {p['macs_per_s'] / 1e9:.1f} GMAC/s"
                          for k, p in peaks.items() if p.get("macs_per_s"))
        out += ["", f"**Hardware bound.** {macs['per_step']:,} multiply-adds per sample per step "
                f"({macs['input_per_step']:,} input, {macs['recurrent_per_step']:,} recurrent). Measured single-product rates "
                f"at this thread count: {rates}. Distance from the bound (median ÷ time the arithmetic needs at those rates):", ""]
        out += ["| case | " + " | ".join(runtimes) + " |", "| --- | " + " | ".join("---" for _ in runtimes) + " |"]
        for mode, b, n in keys:
            if mode != "sequence" or (b == 1 and n not in (100, 1000, nat)):
                continue
            cells = []
            for r in runtimes:
                c = next((c for c in res["cases"] if (c["runtime"], c["batch"], c["length"], c.get("mode")) == (r, b, n, mode)), None)
                cells.append(f"{c['times_bound']:.1f}×" if c and c.get("times_bound") else "–")
            out.append(f"| b{b} × {n} | " + " | ".join(cells) + " |")
    # cold start and sizes
    cold = res.get("coldstart", {})
    if cold:
        out += ["", "| cold start, one sample | wall (median) | peak RSS |", "| --- | --- | --- |"]
        for name, c in cold.items():
            out.append(f"| {name} | {_num(c.get('wall_s'), 's')} | {_num(c.get('peak_rss_mib'), 'MiB', 0)} |"
                       if "wall_s" in c else f"| {name} | error: {c.get('error', '')[:80]} | |")
    sizes = [f"PyTorch checkpoint {res['checkpoint_bytes'] / 1024:.0f} KiB"]
    sizes += [f"{k} {v['bytes'] / 1024:.0f} KiB" for k, v in res.get("files", {}).items()]
    out += ["", "File sizes: " + ", ".join(sizes) + "."]
    agree = res.get("agreement", {})
    if agree:
        parts = []
        for name, a in agree.items():
            if "error" in a:
                parts.append(f"{name}: error")
                continue
            parts.append(f"{name} {a['max_abs_diff']:.2g}" + (f" / {a['same_class'] * 100:.1f}% same class" if "same_class" in a else ""))
        out += ["", "Outputs vs PyTorch on 64 real samples (max abs difference / same predicted class): " + "; ".join(parts) + "."]
    if skipped:
        out += ["", "Skipped: " + "; ".join(f"{k}: {v[:160]}" for k, v in skipped.items()) + "."]
    out.append("")
    return out


COLORS = {"pytorch": "#444444", "edgeseq float": "#1f77b4", "edgeseq int8": "#d62728", "edgeseq fp16": "#9467bd",
          "onnxruntime-default": "#8c8c8c", "openvino": "#2ca02c", "openvino-f32": "#98df8a"}


def plots(results: list[dict[str, Any]], out: Path) -> list[Path]:
    """latency_vs_length.png (batch 1) and speedup.png (per model and case, over PyTorch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if "cases" in r]
    if not results:
        return []
    written = []
    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, res in zip(axes.flat, results):
        for runtime in dict.fromkeys(c["runtime"] for c in res["cases"]):
            pts = sorted((c["length"], c["median_s"] * 1e3) for c in res["cases"]
                         if c["runtime"] == runtime and c["batch"] == 1 and c.get("mode", "sequence") == "sequence"
                         and c.get("median_s"))
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=runtime, color=COLORS.get(runtime),
                        lw=2.2 if runtime.startswith("edgeseq") else 1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{res['model']} (natural length {res['natural_length']})", fontsize=10)
        ax.set_xlabel("sequence length (steps)")
        ax.set_ylabel("batch-1 latency, median (ms)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Latency vs sequence length, batch 1, {results[0]['threads']} thread(s)", fontsize=12)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = out / "latency_vs_length.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    from matplotlib.ticker import FuncFormatter, LogLocator

    cases = [("batch 1 × 100 steps (target: best ≥ 4×, float ≥ 1.5×)", lambda r: ("sequence", 1, 100), (4.0, 1.5)),
             ("batch 1 × natural length", lambda r: ("sequence", 1, r["natural_length"]), ()),
             ("batch 64 × natural length (target ≥ 2×)", lambda r: ("sequence", 64, r["natural_length"]), (2.0,)),
             ("streaming step, batch 1 (target ≥ 15×)", lambda r: ("step", 1, 1), (15.0,))]
    names = ["edgeseq float", "edgeseq int8", "onnxruntime-default", "openvino", "openvino-f32"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), squeeze=False)
    width = 0.8 / len(names)
    for ax, (title, key, targets) in zip(axes.flat, cases):
        for i, name in enumerate(names):
            xs, ys = [], []
            for j, res in enumerate(results):
                mode, b, n = key(res)
                ratio = _ratio(_median(res, "pytorch", b, n, mode), _median(res, name, b, n, mode))
                if ratio:
                    xs.append(j + (i - (len(names) - 1) / 2) * width)
                    ys.append(ratio)
            ax.bar(xs, ys, width=width, label=name, color=COLORS.get(name))
        ax.axhline(1.0, color="black", lw=0.8)
        for target in targets:
            ax.axhline(target, color="#d62728", lw=1, ls="--")
            ax.annotate(f"target {target:g}×", (len(results) - 0.5, target), fontsize=8, color="#d62728",
                        ha="right", va="bottom")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        ax.set_xticks(range(len(results)))
        ax.set_xticklabels([r["model"] for r in results], fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("speed-up over PyTorch eager")
        ax.grid(True, axis="y", which="major", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Speed-up over PyTorch eager at the same thread count ({results[0]['threads']}); above 1× = faster; "
                 "missing bar = case not available", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    path = out / "speedup.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written


README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_section(summary: dict[str, Any]) -> str:
    """The project README's benchmark section: targets table and plots, pointing at bench/."""
    rows = summary_table(summary)
    return "\n".join([
        "## Benchmarks",
        "",
        f"`make bench` times edgeseq (float, INT8, FP16) against PyTorch eager, ONNX Runtime with its default "
        f"settings (all cores) and OpenVINO over the zoo, in one run, the others at {summary['threads']} intra-op "
        f"thread{'s' if summary['threads'] != 1 else ''} each "
        f"({summary['when']}, {summary['machine'].get('cpu')}, {summary['machine'].get('cores')} cores). "
        "Ratios to PyTorch eager (✓ target met, ✗ missed); what was tried and why targets are missed: "
        "[bench/README.md](bench/README.md); every median: [bench/results/summary.md](bench/results/summary.md).",
        "",
        *rows,
        "",
        "![latency vs sequence length](bench/results/latency_vs_length.png)",
        "",
        "![speed-up over PyTorch](bench/results/speedup.png)",
        "",
    ])


def summary_table(summary: dict[str, Any]) -> list[str]:
    out = ["| model | b1 × 100 steps, best (≥ 4×) | b1 × 100, float (≥ 1.5×) | streaming step (≥ 15×) | "
           "batch 64 (≥ 2×) | cold start (≤ 0.5 s) | cold peak RSS (≤ 100 MiB) | ahead of OpenVINO |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, t in summary["models"].items():
        m = summary["met"][model]
        step = f"{_fmt_ratio(t['step'])}{_mark(m['step'])}" + (f" ({_short(t['step_runtime'])})" if t["step_runtime"] else "")
        out.append(
            f"| {model} | {_fmt_ratio(t['b1_100_best'])}{_mark(m['b1_100_best'])} ({_short(t['b1_100_best_runtime'])}) "
            f"| {_fmt_ratio(t['b1_100_float'])}{_mark(m['b1_100_float'])} | {step} "
            f"| {_fmt_ratio(t['b64'])}{_mark(m['b64'])} ({_short(t['b64_runtime'])}) "
            f"| {_num(t['cold_wall'], 's')}{_mark(m['cold_wall'])} | {_num(t['cold_rss'], 'MiB', 0)}{_mark(m['cold_rss'])} "
            f"| {t['vs_openvino_cases']} cases |")
    return out


def update_readme(readme: Path, summary: dict[str, Any]) -> bool:
    """Replace the text between the README's bench markers; False when the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{readme_section(summary)}{README_END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """Rebuild summary.md and the plots from a results folder; optionally refresh the README section.

    python -m bench.report [--results bench/results] [--readme README.md]
    """
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--readme", type=Path, help="README with <!-- bench:start --> / <!-- bench:end --> markers")
    args = ap.parse_args(argv)
    summary = json.loads((args.results / "summary.json").read_text())
    results = [json.loads((args.results / f"{m}.json").read_text())
               for m in [*summary["models"], *summary.get("skipped_models", {})]]
    (args.results / "summary.md").write_text(markdown(summary, results))
    plots(results, args.results)
    if args.readme and not update_readme(args.readme, summary):
        raise SystemExit(f"{args.readme}: no {README_START} / {README_END} markers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
