"""Benchmark figures: printing them, and keeping the results table in BENCHMARKS.md.

BENCHMARKS.md has two generated blocks between HTML-comment markers: the results table
(one row per figure, target beside the measured value, with date and machine) and a details
section per benchmark. A run rewrites only the rows and sections of the benchmarks it ran,
so `python -m bench latency` leaves the last drain and events figures in place. Text outside
the markers is never touched.
"""

import os
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.env import ROOT

MARKDOWN = ROOT / "BENCHMARKS.md"
TABLE_BEGIN, TABLE_END = "<!-- bench:table:begin -->", "<!-- bench:table:end -->"
DETAILS_BEGIN, DETAILS_END = "<!-- bench:details:begin -->", "<!-- bench:details:end -->"
SECTION_RE = re.compile(r"^<!-- bench:section:([\w-]+) -->\n", re.MULTILINE)
TABLE_HEADER = (
    "| Benchmark | Figure | Target | Measured | Result | Date | Machine |\n"
    "|---|---|---|---|---|---|---|\n"
)

INTRO = """# Benchmarks

Performance targets of the bridge, measured by `make bench` (all benchmarks) or
`make bench BENCH_ARGS="drain latency"` (a subset); the code and its exact method are in
`bench/` (each module's docstring). Every run rewrites the rows of the benchmarks it ran.
A MISS does not fail the run: benchmarks are measurements, not tests.

Setup: dedicated PostgreSQL database `bench`, Redis db 14, the live Bitrix24 fake
(`tests/fakes/bitrix24.py`) inside the benchmark process, real `celery worker` and gunicorn
subprocesses; everything on the same machine.

"""


@dataclass
class Figure:
    """One measured number; `ok` is None for figures that have no target (context only)."""

    label: str
    measured: str
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "-"}[self.ok]


@dataclass
class BenchResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, measured: str, target: str = "", ok: bool | None = None) -> None:
        self.figures.append(Figure(label, measured, target, ok))

    @property
    def ok(self) -> bool:
        return all(f.ok is not False for f in self.figures)


def machine() -> str:
    return f"nproc={len(os.sched_getaffinity(0))}, Python {platform.python_version()}"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- console


def print_result(result: BenchResult) -> None:
    rows = [("figure", "target", "measured", "result")]
    rows += [(f.label, f.target or "-", f.measured, f.verdict) for f in result.figures]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"\n== {result.name}: {result.title} ==")
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for note in result.notes:
        print(f"  note: {note}")
    print(f"  => {'PASS' if result.ok else 'MISS'}")


# ---------------------------------------------------------------- BENCHMARKS.md


def update_markdown(results: Sequence[BenchResult], order: Sequence[str]) -> Path:
    """Rewrite the rows and detail sections of `results`; keep those of other benchmarks."""
    text = MARKDOWN.read_text() if MARKDOWN.exists() else INTRO
    date, host = now(), machine()
    ran = {r.name for r in results}

    old_rows = _block(text, TABLE_BEGIN, TABLE_END).removeprefix(TABLE_HEADER)
    rows = [line for line in old_rows.splitlines() if _row_bench(line) not in ran]
    rows += [_row(r.name, f, date, host) for r in results for f in r.figures]
    rows.sort(key=lambda line: _rank(_row_bench(line), order))
    text = _replace_block(
        text, TABLE_BEGIN, TABLE_END, TABLE_HEADER + "".join(f"{r}\n" for r in rows)
    )

    sections = _sections(_block(text, DETAILS_BEGIN, DETAILS_END))
    sections.update({r.name: _details(r, date, host) for r in results})
    body = "".join(
        f"<!-- bench:section:{name} -->\n{sections[name]}"
        for name in sorted(sections, key=lambda n: _rank(n, order))
    )
    text = _replace_block(text, DETAILS_BEGIN, DETAILS_END, body)
    MARKDOWN.write_text(text)
    return MARKDOWN


def _rank(name: str, order: Sequence[str]) -> int:
    return order.index(name) if name in order else len(order)


def _block(text: str, begin: str, end: str) -> str:
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return ""
    return text[start + len(begin) :].split(end, 1)[0].lstrip("\n")


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        heading = "## Results\n\n" if begin == TABLE_BEGIN else "## Details\n\n"
        return f"{text.rstrip()}\n\n{heading}{begin}\n{body}{end}\n"
    return f"{text[: start + len(begin)]}\n{body}{text[stop:]}"


def _row_bench(line: str) -> str:
    cells = line.strip().strip("|").split("|")
    return cells[0].strip() if cells else ""


def _cell(value: str) -> str:
    return value.replace("|", "\\|") or "-"


def _row(name: str, f: Figure, date: str, host: str) -> str:
    cells = [name, f.label, f.target or "-", f.measured, f.verdict, date, host]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _sections(block: str) -> dict[str, str]:
    parts = SECTION_RE.split(block)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _details(result: BenchResult, date: str, host: str) -> str:
    lines = [f"### {result.name}: {result.title}", "", f"Run {date} on {host}.", ""]
    lines += _bullets(result.notes)
    return "\n".join(lines) + "\n"


def _bullets(notes: Iterable[str]) -> list[str]:
    bullets = [f"- {note}" for note in notes]
    return [*bullets, ""] if bullets else []
