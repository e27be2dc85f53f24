"""The pure part of the benchmark: percentiles, ratios to the reference, targets, the table
and the JSON document."""

import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Unit = Literal["/s", "ms", "x", "MB"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` percentile (0..1) by the nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not within 0..1")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float, reference: float) -> str:
    """How `value` compares with the reference, written `1/N` (N to two significant digits)."""
    if value <= 0 or reference <= 0:
        return "-"
    times = reference / value
    if times >= 10:
        return f"1/{times:.0f}"
    return f"1/{times:.1f}"


@dataclass(frozen=True)
class Target:
    """What the figure's `measure` ("value", "p50" or "p99") must reach: at least (>=), at
    most (<=) or more than (>) `threshold`."""

    measure: Literal["value", "p50", "p99"]
    op: Literal[">=", "<=", ">"]
    threshold: float
    unit: Unit

    def met(self, figure: "Figure") -> bool | None:
        measured = getattr(figure, figure_measure(self.measure))
        if measured is None:
            return None
        if self.op == ">=":
            return bool(measured >= self.threshold)
        if self.op == "<=":
            return bool(measured <= self.threshold)
        return bool(measured > self.threshold)

    def text(self) -> str:
        what = "" if self.measure == "value" else f"{self.measure} "
        return f"{what}{self.op} {number(self.threshold, self.unit)}"


def figure_measure(measure: str) -> str:
    return {"value": "value", "p50": "p50_ms", "p99": "p99_ms"}[measure]


@dataclass
class Figure:
    """One measured figure: a rate (per second), a latency (ms), a factor or a size (MB)."""

    key: str
    title: str
    database: str
    value: float
    unit: Unit
    count: int = 0  # how many messages, requests or processes it is over
    seconds: float = 0.0  # how long it took
    p50_ms: float | None = None
    p99_ms: float | None = None
    targets: list[Target] = field(default_factory=list)
    target_from_reference: float | None = None  # e.g. 0.1: at least 1/10 of raw JetStream
    note: str = ""

    def met(self, reference: float | None) -> bool | None:
        """Whether every target is met; None when the figure has no target."""
        results = [target.met(self) for target in self.targets]
        if self.target_from_reference is not None and reference:
            results.append(self.value >= reference * self.target_from_reference)
        if not results:
            return None
        return all(bool(r) for r in results)

    def target_text(self) -> str:
        parts = [target.text() for target in self.targets]
        if self.target_from_reference is not None:
            parts.append(f">= 1/{1 / self.target_from_reference:.0f} of raw")
        return ", ".join(parts) or "-"


def number(value: float, unit: Unit) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f} MB"


def _cell_ms(value: float | None) -> str:
    return "-" if value is None else number(value, "ms")


REFERENCE_KEY = "raw_jetstream"


def _ratio_cell(figure: Figure, reference: float | None) -> str | None:
    if figure.unit != "/s" or not reference or figure.key == REFERENCE_KEY:
        return None
    return ratio(figure.value, reference)


def table(figures: Sequence[Figure], reference: float | None) -> str:
    """The figures as a Markdown table; rates carry their ratio to the reference."""
    header = ["figure", "database", "value", "p50", "p99", "vs raw JetStream", "target", "met"]
    rows = [header, ["---"] * len(header)]
    for figure in figures:
        met = figure.met(reference)
        rows.append(
            [
                figure.title,
                figure.database,
                number(figure.value, figure.unit),
                _cell_ms(figure.p50_ms),
                _cell_ms(figure.p99_ms),
                _ratio_cell(figure, reference) or "-",
                figure.target_text(),
                "-" if met is None else ("yes" if met else "no"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        if row[0] == "---":
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        else:
            lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def document(
    figures: Sequence[Figure], reference: float | None, machine: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: the machine, the run's settings and every figure with its target."""
    out = []
    for figure in figures:
        entry = asdict(figure)
        entry["targets"] = [asdict(target) for target in figure.targets]
        entry["target"] = figure.target_text()
        entry["met"] = figure.met(reference)
        entry["ratio_to_reference"] = _ratio_cell(figure, reference)
        out.append(entry)
    return {"machine": machine, "settings": settings, "reference_per_second": reference, "figures": out}


def machine_facts() -> dict[str, Any]:
    """CPU count and model, memory, operating system and Python of this machine."""
    model = platform.processor() or ""
    memory_mb = 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": memory_mb,
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }
