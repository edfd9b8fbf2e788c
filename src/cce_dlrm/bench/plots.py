"""PNG plots beside the report: throughput ratio against cap per method, clustering time
against ids. Drawn with matplotlib's object API (no pyplot state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_sections(sections, out_dir: Path, host: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    by_key = {s.key: s for s in sections}
    tp = by_key.get("throughput")
    if tp is not None and tp.tables:
        df = tp.tables[-1][1]
        if not df.empty:
            batches = sorted(df.batch.unique())
            fig = Figure(figsize=(5 * len(batches), 4))
            for i, batch in enumerate(batches):
                ax = fig.add_subplot(1, len(batches), i + 1)
                part = df[df.batch == batch]
                for method, m in part.groupby("method"):
                    m = m.sort_values("cap")
                    ax.plot(m.cap, m.vs_torchrec, marker="o", label=method)
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
                ax.set_xscale("log")
                ax.set_xlabel("max_table_params (cap)")
                ax.set_ylabel("samples/s / torchrec DLRM")
                ax.set_title(f"batch {batch}")
            fig.axes[-1].legend(fontsize=7, loc="best")
            name = f"{host}_throughput.png"
            _save(fig, out_dir / name)
            tp.plots.append(name)
    cl = by_key.get("clustering")
    if cl is not None and cl.tables:
        df = cl.tables[0][1]
        if not df.empty and "n" in df:
            fig = Figure(figsize=(5, 4))
            ax = fig.add_subplot(1, 1, 1)
            for k, part in df.groupby("k"):
                part = part.sort_values("n")
                ax.plot(part.n, part.seconds, marker="o", label=f"k = {k:,}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("ids n")
            ax.set_ylabel("seconds per round (4 columns)")
            ax.legend(fontsize=8)
            name = f"{host}_clustering.png"
            _save(fig, out_dir / name)
            cl.plots.append(name)
