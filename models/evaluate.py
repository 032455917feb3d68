"""Evaluate the zoo: ``python -m models.evaluate [--onnx] [NAME ...]``.

For every recipe: the metric of the PyTorch model (with ``lengths`` for variable-length models)
on the committed eval set ``models/data/<name>-test.npz``; an ONNX export (opset 17, dynamic batch
and sequence axes; variable-length recipes with a ``lengths`` input) run with an edgeseq Session on
the same padded set; the ONNX metric and the share of identical predictions. Rewrites the table in
models/README.md between the zoo-table markers (unless --no-readme or a subset is given).

By default the ONNX files go to a temporary folder; ``--onnx`` keeps them in ``--out``
(default out/zoo, ignored by git).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from models.common import MODELS_DIR
from models.zoo import BY_NAME, ZOO, Recipe, evaluate, meets_minimum

README = MODELS_DIR / "README.md"
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def fmt_metric(recipe: Recipe, value: float, res: dict) -> str:
    if recipe.metric == "accuracy":
        return f"acc {value:.4f}"
    return f"MAE ${value:.4f} (naive ${res['naive']:.4f})"


def fmt_size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def table(rows: list[tuple[Recipe, dict]]) -> str:
    lines = [
        "| model | task | data source (license) | eval set | checkpoint | parameters | "
        "minimum | PyTorch | ONNX Runtime | identical predictions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, res in rows:
        minimum = f"acc >= {r.minimum:.2f}" if r.minimum is not None else "report vs naive"
        lines.append(
            f"| `{r.name}` | {r.task} | {r.source} | {res['n']} "
            f"| {fmt_size(res['checkpoint_bytes'])} "
            f"| {res['parameters']:,} | {minimum} | {fmt_metric(r, res['torch'], res)} "
            f"| {fmt_metric(r, res['onnx'], res)} | {100 * res['agreement']:.2f}% |"
        )
    return "\n".join(lines)


def update_readme(text: str) -> None:
    content = README.read_text(encoding="utf-8")
    a, b = content.index(START), content.index(END)
    content = content[: a + len(START)] + "\n" + text + "\n" + content[b:]
    README.write_text(content, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.evaluate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="recipes (default: all)")
    ap.add_argument("--onnx", action="store_true", help="keep the exported ONNX files in --out")
    ap.add_argument("--out", type=Path, default=Path("out/zoo"), help="folder for --onnx")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite models/README.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    recipes = [BY_NAME[n] for n in args.names] if args.names else list(ZOO)
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out if args.onnx else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for r in recipes:
            t0 = time.time()
            res = evaluate(r, out_dir / f"{r.name}.onnx")
            rows.append((r, res))
            passed = (meets_minimum(r, res["torch"]) and meets_minimum(r, res["onnx"])
                      and res["agreement"] >= 0.999)
            ok &= passed
            print(f"{r.name:24s} n={res['n']:5d} params={res['parameters']:8,d} "
                  f"ckpt={fmt_size(res['checkpoint_bytes']):>9s} "
                  f"torch[{fmt_metric(r, res['torch'], res)}] "
                  f"onnx[{fmt_metric(r, res['onnx'], res)}] "
                  f"identical={100 * res['agreement']:.2f}% max|diff|={res['max_abs_diff']:.2e} "
                  f"{'OK' if passed else 'FAIL'} ({time.time() - t0:.1f}s)", flush=True)
    md = table(rows)
    if not args.no_readme and not args.names:
        update_readme(md)
        print(f"updated {README}")
    else:
        print(md)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
