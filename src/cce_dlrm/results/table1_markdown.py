"""``table1.md`` from ``table1_data.build``'s dict: factors, BCE grid, noise verdict, paper, notes."""

from __future__ import annotations


def bce(v: float | None, digits: int = 5) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def factor(v: float | None, bound: str | None = None) -> str:
    if v is None:
        return "-"
    text = f"{v:,.0f}x" if v >= 100 else f"{v:.1f}x"
    return f">= {text}" if bound else text


def cap(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def mean_std(s: dict, fmt=bce) -> str:
    if not s or not s["n"]:
        return "-"
    return fmt(s["mean"]) if s["std"] is None else f"{fmt(s['mean'])} ± {fmt(s['std'])}"


def min_max(s: dict, fmt=bce) -> str:
    return "-" if not s or not s["n"] else f"{fmt(s['min'])}–{fmt(s['max'])}"


def seeds(values: dict, fmt=bce) -> str:
    return ", ".join(f"s{k}: {fmt(v)}" for k, v in sorted(values.items())) or "-"


def _factor_cell(e: dict) -> str:
    if e["status"] == "not reached":
        return "not reached"
    return f"{factor(e['factor_all'], e['bound'])} ({e['status']})"


def _fits_cell(e: dict, key: str = "factor_all") -> str:
    parts = []
    for degree, fit in sorted(e["fits"].items()):
        if len(e["fit_caps"]) < int(degree) + 1:
            text = f"too few caps ({len(e['fit_caps'])})"
        else:
            text = factor(fit[key]) if fit["cap"] is not None else "not reached"
        parts.append(f"deg {degree}: {text}")
    return "; ".join(parts) or "-"


def _seed_factors(e: dict) -> str:
    cells = []
    for s, x in sorted(e["seeds"].items()):
        cells.append(f"s{s}: {'not reached' if x['status'] == 'not reached' else factor(x['factor_all'], x['bound'])}")
    return ", ".join(cells) or "-"


def group_markdown(g: dict) -> str:
    epochs = "epoch limit unknown" if g["epochs"] is None else f"{g['epochs']} epoch(s)"
    lines = [f"## {g['dataset']}, {epochs}", ""]
    b = g["baseline"]
    paper_base = g["paper"]["baseline_bce"]
    base = (f"Full-table baseline (test BCE at the best validation): {mean_std(b['test_bce'])}, "
            f"min–max {min_max(b['test_bce'])}, seeds {seeds(b['seeds'])}")
    if paper_base is not None:
        base += f"; paper {paper_base:.5f} (ours − paper {g['paper']['baseline_diff']:+.5f})"
    lines += [base + ".", ""]
    if b["full_params"]:
        lines += [f"Full tables: {b['full_params']:,.0f} parameters in all, {b['largest_table_params']:,.0f} "
                  f"in the largest.", ""]

    lines += ["### Compression to reach the full-table baseline BCE", "",
              "| method | factor, all tables | fits (all tables) | cap reached | factor, largest table only | "
              "per seed (all tables) | seeds mean ± std | seeds min–max |",
              "|---|---|---|---|---|---|---|---|"]
    for m, v in g["methods"].items():
        e = v["factor"]
        if e is None:
            lines.append(f"| {m} | - | - | - | - | - | - | - |")
            continue
        reached = "-" if e["cap"] is None else ("<= " if e["bound"] else "") + cap(e["cap"])
        ss = e["seed_stats_all"]
        lines.append(f"| {m} | {_factor_cell(e)} | {_fits_cell(e)} | {reached} | "
                     f"{factor(e['factor_largest'], e['bound'])} | {_seed_factors(e)} | "
                     f"{mean_std(ss, factor)} (n={ss['n']}) | {min_max(ss, factor)} |")
    lines.append("")

    if g["paper"]["factors"]:
        lines += ["### Beside the paper's Table 1", "",
                  "| method | ours (all tables) | paper | ours ÷ paper |", "|---|---|---|---|"]
        for r in g["paper"]["factors"]:
            ours = "not reached" if r["ours_status"] == "not reached" else factor(r["ours"], r["ours_bound"])
            if r["ours_status"] == "no runs":
                ours = "no runs"
            paper = factor(r["paper_low"]) if r["paper_low"] == r["paper_high"] else \
                f"{factor(r['paper_low'])}–{factor(r['paper_high'])}"
            ratio = r["ours_over_paper"]
            ratio_text = "-" if not ratio else (f"{ratio[0]:.3g}" if ratio[0] == ratio[1]
                                                else f"{ratio[0]:.3g}–{ratio[1]:.3g}")
            lines.append(f"| {r['method']} | {ours} | {paper} | {ratio_text} |")
        lines.append("")

    with_paper = any(x["paper_bce"] is not None for v in g["methods"].values() for x in v["grid"])
    head = "| method | cap | params in largest table | seeds | test BCE mean ± std | min–max | per seed |"
    rule = "|---|---|---|---|---|---|---|"
    if with_paper:
        head, rule = head + " paper | ours − paper |", rule + "---|---|"
    lines += ["### Test BCE at the best validation, per method and cap", "", head, rule]
    for m, v in g["methods"].items():
        for x in v["grid"]:
            row = (f"| {m} | {cap(x['cap'])} | {cap(x['largest_table_params'])} | {x['test_bce']['n']} | "
                   f"{mean_std(x['test_bce'])} | {min_max(x['test_bce'])} | {seeds(x['seeds'])} |")
            if with_paper:
                diff = "-" if x["diff_vs_paper"] is None else f"{x['diff_vs_paper']:+.5f}"
                row += f" {bce(x['paper_bce'], 4)} | {diff} |"
            lines.append(row)
    lines.append("")

    n = g["noise"]
    lines += ["### CCE against the next best method", ""]
    if n["caps"] or n["factor"]:
        lines += ["| where | next best | CCE | next best's | gap (next − CCE) | sum of stds | verdict |",
                  "|---|---|---|---|---|---|---|"]
        if n["factor"]:
            f = n["factor"]
            ratio = f["cce_over_other"]
            gap = "-" if ratio is None else (f"CCE needs {ratio:.2f}x fewer parameters" if ratio >= 1
                                             else f"CCE needs {1 / ratio:.2f}x more parameters")
            lines.append(f"| compression factor | {f['next_best'] or '-'} | {factor(f['cce'])} | {factor(f['other'])} | "
                         f"{gap} | - | {f['verdict']} |")
        for c in n["caps"]:
            lines.append(f"| cap {cap(c['cap'])} | {c['next_best']} | {mean_std(c['cce'])} | {mean_std(c['other'])} | "
                         f"{c['gap']:+.5f} | {bce(c['std_sum'])} | {c['verdict']} |")
        lines.append("")
    lines += [n["summary"], ""]

    if g["not_completed"]:
        lines += ["### Runs not completed (not averaged)", "",
                  "| method | cap | seed | status | reason | run |", "|---|---|---|---|---|---|"]
        for r in g["not_completed"]:
            reason = str(r["reason"]).replace("|", "/").replace("\n", " ")
            seed = "-" if r["seed"] is None else int(r["seed"])
            lines.append(f"| {r['method']} | {cap(r['max_table_params'])} | {seed} | {r['status']} | "
                         f"{reason} | {r['run_dir']} |")
        lines.append("")
    for note in g["notes"]:
        lines += [f"- {note}"]
    if g["notes"]:
        lines.append("")
    return "\n".join(lines)


def markdown(table: dict, title: str = "Table 1: compression to reach the full-table baseline") -> str:
    lines = [f"# {title}", ""]
    for g in table["groups"]:
        lines.append(group_markdown(g))
    if table["unreadable"]:
        lines += ["## Unreadable metrics.json files", ""]
        lines += [f"- {r['reason']}" for r in table["unreadable"]]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in table["notes"]]
    return "\n".join(lines) + "\n"
