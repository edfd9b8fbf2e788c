"""The report: sections of tables, notes and targets -> ``<host>.md`` and ``<host>.csv``.

    sections = [Section("throughput", "Training throughput", tables=[("...", df)], ...)]
    write_report(sections, Path("results/bench"), host="myhost", header=["..."])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Target:
    """One target of the issue, the measured value it is judged on, and whether it is met
    (``None``: not measured at this scale)."""

    target: str
    measured: str
    met: bool | None


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


#: every section the report has, in order (a section that failed still gets its heading)
SECTION_TITLES = {
    "throughput": "Training throughput vs torchrec's DLRM",
    "loader": "Loader + step",
    "split": "Step time split at batch 128",
    "profile": "Where the time goes at batch 128 (profile)",
    "memory": "Memory per method",
    "scaling": "Scaling: 1 and 2 processes under DMP",
    "clustering": "CCE clustering rounds",
    "preprocess": "Preprocessing",
}


def _fmt(value) -> str:
    if isinstance(value, float):
        if value != value:
            return ""
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured at this scale"}[met]


def render(sections: list[Section], header: list[str]) -> str:
    out = [*header, ""]
    targets = [t for s in sections for t in s.targets]
    if targets:
        out += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
        out += [f"| {t.target} | {t.measured} | {_verdict(t.met)} |" for t in targets]
        out.append("")
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.intro:
            out += [s.intro, ""]
        if s.error:
            out += [f"**This section failed:** {s.error}", ""]
        for caption, df in s.tables:
            if caption:
                out += [caption, ""]
            out += [markdown_table(df), ""]
        for note in s.notes:
            out += [f"- {note}"]
        if s.notes:
            out.append("")
        for plot in s.plots:
            out += [f"![{s.title}]({plot})", ""]
        out += [f"_Section time: {s.seconds:.0f} s._", ""]
    return "\n".join(out)


def write_report(sections: list[Section], out_dir: Path, host: str, header: list[str]) -> tuple[Path, Path]:
    """Writes ``<host>.md`` and ``<host>.csv`` (every table, with ``section`` and ``table`` columns)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{host}.md"
    csv = out_dir / f"{host}.csv"
    frames = []
    for s in sections:
        for i, (caption, df) in enumerate(s.tables):
            frames.append(df.assign(section=s.key, table=i))
    pd.concat(frames, ignore_index=True).to_csv(csv, index=False) if frames else csv.write_text("")
    md.write_text(render(sections, header))
    return md, csv
