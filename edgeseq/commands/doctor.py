"""``edgeseq doctor``: print what this machine offers edgeseq and what ``device='auto'`` would pick."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Show versions, execution providers, CPU INT8 features, GPUs, and what device='auto' chooses (and why)."""
    from ..runtime.doctor import collect, format_report

    info = collect()
    click.echo(json.dumps(info, indent=2) if as_json else format_report(info))
