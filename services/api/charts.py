"""Charts as SVG made on the server, to put inline in a page. Pure, no I/O.

Each chart is one `<svg>` element that scales to its container (a `viewBox`, width 100%): on a
phone it shrinks with the page. It is an image to assistive technology (`role="img"`), named
by its `<title>` and described by its `<desc>` (what it shows, in words, with its figures); each
point and bar carries its own `<title>` too. It holds no script, no style sheet or style
attribute (a page's Content-Security-Policy needs allow none), no link and nothing fetched:
only shapes, presentation attributes and text. All text is escaped, and characters XML cannot
hold are replaced, so a hostile label is shown as text and the SVG stays well-formed.

Colours are dark enough on white for text (at least 4.5:1) and lines (3:1); series are told
apart by dashes and markers as well as colour.
"""

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from services.api.reports import Report, seconds

Unit = Literal["count", "duration"]

WIDTH = 480  # small enough that its text stays readable on a phone (14 units: 10.5 px at 360 px)
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 40, 34
FONT_SIZE = 14
INK = "#1a1a1a"  # text: 17:1 on white
GRID = "#767676"  # axes and grid: 4.5:1
COLOURS = ("#1f4e79", "#a0410d", "#2e6b30", "#5b3a8c")  # each at least 6:1 on white
DASHES = ("", "6 4", "2 3", "8 3 2 3")
MAX_X_LABELS = 6
MAX_MARKERS = 62
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_DURATION_STEPS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


@dataclass(frozen=True)
class Series:
    """One line (or one bar of each group): its name in the legend and a value per label
    (None: nothing to show there)."""

    name: str
    values: Sequence[float | None]


def text(value: str) -> str:
    """Text safe inside an SVG element or attribute: escaped, XML-impossible characters replaced."""
    return html.escape(_NOT_XML.sub("\ufffd", value), quote=True)


def count_text(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def duration_text(value: float) -> str:
    """Seconds as people read them: 45s, 12m, 1h 30m, 2d 4h."""
    total = round(value)
    if total < 60:
        return f"{total}s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _say(unit: Unit, value: float) -> str:
    return duration_text(value) if unit == "duration" else count_text(value)


def _step(top: float, unit: Unit, ticks: int = 4) -> float:
    """A round step so that `ticks` steps reach `top`."""
    if top <= 0:
        return 60.0 if unit == "duration" else 1.0
    wanted = top / ticks
    if unit == "duration":
        for step in _DURATION_STEPS:
            if step >= wanted:
                return float(step)
        days = wanted / 86400
        return 86400.0 * _nice(days)
    return max(1.0, _nice(wanted))


def _nice(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least `value`."""
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return float(factor * power)
    return float(10 * power)


def _id(chart_id: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", chart_id.lower()).strip("-")
    return f"chart-{cleaned}" if cleaned else "chart"


def _frame(
    *,
    title: str,
    description: str,
    chart_id: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: Unit,
    swatches: bool = False,
) -> tuple[list[str], float, float]:
    """The opening of a chart: the svg element, its title and description, the legend, the
    grid with its value axis (a legend of lines, or of `swatches` for bars). Returns the parts,
    the top of the value axis and the plot's height."""
    ident = _id(chart_id)
    values = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    top_value = max(values, default=0.0)
    step = _step(top_value, unit)
    steps = max(1, math.ceil(top_value / step)) if top_value > 0 else 4
    axis_top = step * steps
    plot_height = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%"'
        f' role="img" aria-labelledby="{ident}-title {ident}-desc" font-family="{text(FONT)}"'
        f' font-size="{FONT_SIZE}" fill="{INK}">',
        f'<title id="{ident}-title">{text(title)}</title>',
        f'<desc id="{ident}-desc">{text(description)}</desc>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    x = LEFT
    for index, one in enumerate(series):
        colour, dash = COLOURS[index % len(COLOURS)], DASHES[index % len(DASHES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        if swatches:
            parts.append(f'<rect x="{x}" y="11" width="16" height="14" fill="{colour}"/>')
        else:
            parts.append(
                f'<line x1="{x}" y1="18" x2="{x + 24}" y2="18" stroke="{colour}" stroke-width="3"{dashed}/>'
            )
        width = 16 if swatches else 24
        parts.append(f'<text x="{x + width + 6}" y="23">{text(one.name)}</text>')
        x += width + 6 + round(FONT_SIZE * 0.6 * min(len(one.name), 40)) + 20
    for tick in range(steps + 1):
        value = step * tick
        y = TOP + plot_height - plot_height * value / axis_top
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"'
            f' stroke-width="{1 if tick == 0 else 0.5}"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{text(_say(unit, value))}</text>'
        )
    if not labels or not values:
        parts.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{TOP + plot_height / 2:.1f}"'
            ' text-anchor="middle">No figures in this period</text>'
        )
    return parts, axis_top, plot_height


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    """Labels under the plot: at most MAX_X_LABELS of them, evenly, each kept inside the chart."""
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    y = HEIGHT - BOTTOM + 20
    shown = []
    for index, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if index % every:
            continue
        half = FONT_SIZE * 0.3 * min(len(label), 40)  # about half its width
        middle = min(max(x, half + 2), WIDTH - half - 2)
        shown.append(f'<text x="{middle:.1f}" y="{y}" text-anchor="middle">{text(label)}</text>')
    return shown


def line_chart(
    *,
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: Unit = "count",
    chart_id: str = "line",
) -> str:
    """A line per series over the labels (left to right), from zero up; a gap where a value is None."""
    parts, axis_top, plot_height = _frame(
        title=title, description=description, chart_id=chart_id, labels=labels, series=series, unit=unit
    )
    width = WIDTH - LEFT - RIGHT
    n = len(labels)
    xs = [LEFT + width * (i + 0.5) / n for i in range(n)]  # the middle of each label's share

    def y_of(value: float) -> float:
        return TOP + plot_height - plot_height * value / axis_top

    for index, one in enumerate(series):
        colour, dash = COLOURS[index % len(COLOURS)], DASHES[index % len(DASHES)]
        path: list[str] = []
        pen_down = False
        for x, value in zip(xs, one.values, strict=False):
            if value is None or not math.isfinite(value):
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{x:.1f} {y_of(value):.1f}")
            pen_down = True
        if path:
            dashed = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"'
                f' stroke-linejoin="round"{dashed}/>'
            )
        if n <= MAX_MARKERS:
            for x, label, value in zip(xs, labels, one.values, strict=False):
                if value is None or not math.isfinite(value):
                    continue
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y_of(value):.1f}" r="3" fill="{colour}">'
                    f"<title>{text(f'{label}: {_say(unit, value)} {one.name}')}</title></circle>"
                )
    parts += _x_labels(labels, xs)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    *,
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: Unit = "count",
    chart_id: str = "bars",
) -> str:
    """A group of bars per label, one bar per series, from zero up; none where a value is None."""
    parts, axis_top, plot_height = _frame(
        title=title,
        description=description,
        chart_id=chart_id,
        labels=labels,
        series=series,
        unit=unit,
        swatches=True,
    )
    width = WIDTH - LEFT - RIGHT
    n = max(1, len(labels))
    band = width / n
    group = band * 0.8
    bar = group / max(1, len(series))
    xs = [LEFT + band * (i + 0.5) for i in range(len(labels))]
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        for i, (label, value) in enumerate(zip(labels, one.values, strict=False)):
            if value is None or not math.isfinite(value):
                continue
            height = plot_height * value / axis_top
            x = LEFT + band * i + (band - group) / 2 + bar * index
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_height - height:.1f}" width="{max(bar - 1, 0.5):.1f}"'
                f' height="{height:.1f}" fill="{colour}">'
                f"<title>{text(f'{label}: {one.name} {_say(unit, value)}')}</title></rect>"
            )
    parts += _x_labels(labels, xs)
    parts.append("</svg>")
    return "".join(parts)


# -- the report's charts -------------------------------------------------------------------------


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_label(iso: str) -> str:
    """A bucket's ISO date as an axis shows it: "2 Nov"."""
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.day} {MONTHS[day.month - 1]}"


def open_load_chart(report: Report, *, chart_id: str = "open-load") -> str:
    """Open conversations, and those awaiting a reply, at the end of each bucket."""
    dates = [line.label for line in report.buckets]
    labels = [day_label(label) for label in dates]
    opened = [line.open for line in report.buckets]
    per = "week" if report.bucket == "week" else "day"
    if labels:
        peak = max(range(len(opened)), key=lambda i: opened[i])
        description = (
            f"Open conversations at the end of each {per} from {dates[0]} to {dates[-1]}"
            f" ({report.timezone}): highest {opened[peak]} on {dates[peak]}, {opened[-1]} at the end,"
            f" of which {report.buckets[-1].awaiting} awaiting a reply."
        )
    else:
        description = "No days in this period."
    return line_chart(
        title="Open load",
        description=description,
        labels=labels,
        series=[
            Series("Open", [float(v) for v in opened]),
            Series("Awaiting a reply", [float(line.awaiting) for line in report.buckets]),
        ],
        unit="count",
        chart_id=chart_id,
    )


def first_response_chart(report: Report, *, chart_id: str = "first-response") -> str:
    """The median and p90 first response time (business time) of each bucket."""
    labels = [day_label(line.label) for line in report.buckets]
    median = [_float(seconds(line.figures.first_response_median)) for line in report.buckets]
    p90 = [_float(seconds(line.figures.first_response_p90)) for line in report.buckets]
    summary = report.summary
    per = "week" if report.bucket == "week" else "day"
    if summary.first_response_median is not None and summary.first_response_p90 is not None:
        description = (
            f"First response time in business hours per {per}: over the period, median"
            f" {duration_text(summary.first_response_median.total_seconds())} and p90"
            f" {duration_text(summary.first_response_p90.total_seconds())}"
            f" over {summary.first_responses} first responses."
        )
    else:
        description = "No first responses in this period."
    return bar_chart(
        title="First response time",
        description=description,
        labels=labels,
        series=[Series("Median", median), Series("p90", p90)],
        unit="duration",
        chart_id=chart_id,
    )


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)
