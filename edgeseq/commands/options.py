"""Option types shared by the commands."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteNonNegative(click.ParamType):
    """A float >= 0 that is a number: ``nan`` would turn a tolerance gate off without a word, ``inf`` too."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} must be a finite number >= 0", param, ctx)
        return number


TOLERANCE = FiniteNonNegative()
