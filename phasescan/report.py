"""`python -m phasescan.report RESULTS_DIR [--by attn_rate] [--y d_model] [--html]`: a sweep's numbers in the
form the paper reports them, as Markdown (docs/reproduction.md is made of its output).

Per value of `--by` (and of `--y` when it was swept): runs, grad_sym, dist_irr, dist_irr_top_wrong
and circularity median with their interquartile range, the share of each algorithm, the share of
circular models (the paper's circularity >= 0.995 filter, and the classifier's own threshold), the
median test accuracy, the convergence facts (median final training loss and parameter norm) and the
share of runs whose loss spiked after they fit (spike_loss > train.FIT_LOSS).
Then three estimates of where the transition sits along `--by`, each with a 95% bootstrap interval
over seeds (phasescan/boundary.py): where the Pizza share, the share of gradient-symmetric models
(grad_sym >= the Pizza threshold, whatever dist_irr says) and the share of non-Clock models first
fall below one half. Last, the device, precision and wall time from the manifest. Swept axes that
a table puts together (all but `--by` and `--y`) are named first, with their values.

`--html` writes RESULTS_DIR/report.html instead: one page that needs nothing else (figures as PNG
data URIs, the style sheet inline, no scripts, no links out) with the phase table, the boundary
tables, the sweep's figures (drawn afresh from runs.parquet; single-model, history and refinement
figures copied from RESULTS_DIR/figures/ when there), the per-bin metrics, convergence and loss
spikes, config.yaml and manifest.json.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors

from . import boundary, plot, results, table
from .classify import ALGORITHMS
from .config import ConfigError
from .plot import CIRCULAR_MIN, read_config
from .style import COLORS, STYLE, pooled_values
from .train import FIT_LOSS


def _iqr(values: pd.Series) -> str:
    q25, q50, q75 = values.quantile([0.25, 0.5, 0.75])
    return f"{q50:.3f} [{q25:.3f}, {q75:.3f}]"


def summary(runs: pd.DataFrame, by: str, min_circularity: float) -> pd.DataFrame:
    """One row per value of `by`: the per-bin figures described in the module docstring."""
    rows = []
    for value, group in runs.groupby(by, sort=True):
        row = {by: value, "runs": len(group), "grad_sym": _iqr(group["grad_sym"]),
               "dist_irr": _iqr(group["dist_irr"])}
        if "dist_irr_top_wrong" in group:  # tables from before the column have only dist_irr
            row["dist_irr_top_wrong"] = _iqr(group["dist_irr_top_wrong"])
        row["circularity"] = _iqr(group["circularity"])
        shares = group["algorithm"].value_counts(normalize=True)
        row.update({name: f"{shares.get(name, 0.0):.2f}" for name in ALGORITHMS
                    if (runs["algorithm"] == name).any()})
        row[f"circ>={CIRCULAR_MIN}"] = f"{(group['circularity'] >= CIRCULAR_MIN).mean():.2f}"
        row[f"circ>={min_circularity}"] = f"{(group['circularity'] >= min_circularity).mean():.2f}"
        row["test_acc"] = f"{group['test_acc'].median():.3f}"
        # Convergence, to hold against the authors' (reference: loss 1.45e-7, norm 24.4)
        row["train_loss"] = f"{group['train_loss'].median():.3g}"
        row["param_norm"] = f"{group['param_norm'].median():.3g}"
        if "spike_loss" in group:  # loss above FIT_LOSS again after the run fit
            row["spiking"] = f"{(group['spike_loss'] > FIT_LOSS).mean():.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def transitions(runs: pd.DataFrame, by: str, y: str | None, pizza_min_grad_sym: float,
                n_boot: int = 1000) -> pd.DataFrame:
    """Where each of three shares first falls below 1/2 along `by` (boundary.estimate)."""
    frame = runs if y else runs.assign(_all="all")
    y = y or "_all"
    definitions = {
        "pizza share": frame["algorithm"],
        f"grad_sym >= {pizza_min_grad_sym} share": np.where(
            frame["grad_sym"] >= pizza_min_grad_sym, "symmetric", "asymmetric"),
        "non-clock share": np.where(frame["algorithm"] == "clock", "clock", "non_clock"),
    }
    labels = {"pizza share": "pizza"}
    out = []
    for name, column in definitions.items():
        label = labels.get(name, "symmetric" if "grad_sym" in name else "non_clock")
        est = boundary.estimate(frame.assign(algorithm=column), x=by, y=y, label=label, n_boot=n_boot)
        out.append(est.assign(share=name))
    table = pd.concat(out, ignore_index=True)
    cols = ([] if y == "_all" else [y]) + ["share", "boundary", "lo", "hi", "status", "runs_per_cell"]
    return table[cols]


def markdown(frame: pd.DataFrame) -> str:
    """A pandas frame as a GitHub Markdown table (no tabulate dependency)."""
    def text(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def pooled_axes(runs: pd.DataFrame, *kept: str | None) -> list[str]:
    """The swept axes (more than one value in the table) that a table keeping `kept` pools."""
    return [a for a in table.swept_axes(runs) if a not in kept]


def pooled_sentence(runs: pd.DataFrame, axes: list[str], hint: bool = True) -> str:
    """The sentence that says which swept axes a table puts together ("" when none)."""
    if not axes:
        return ""
    advice = " (--y AXIS: one table per value of AXIS)" if hint else ""
    return (f"Pooled over {pooled_values(runs, axes)}: every row puts the runs of all these "
            f"values together{advice}.")


def interval_note(found: pd.DataFrame) -> str:
    """Which rows of a boundary table have no real 95% interval (plot.interval_problem), or ""."""
    notes = {}
    for _, r in found.iterrows():
        problem = plot.interval_problem(r) if r["status"] == "crossing" else None
        if problem:  # rows named by their first column (the share, or the y value)
            notes.setdefault(problem, []).append(f"{found.columns[0]} {table.short(r.iloc[0])}"
                                                 if found.columns[0] != "share" else r.iloc[0])
    return "; ".join(f"{', '.join(rows)}: {what} ({why}), lo and hi are no interval"
                     for (what, why), rows in notes.items())


@dataclasses.dataclass
class Numbers:
    """Everything the report says, computed once; `markdown_report` and `html_report` lay it out."""
    runs: pd.DataFrame
    by: str
    y: str | None
    pooled: list[str]  # swept axes the per-bin tables put together
    blocks: list[tuple[object, pd.DataFrame]]  # (y value or None, summary)
    transitions: pd.DataFrame
    manifest: dict | None
    config_text: str


def numbers(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> Numbers:
    runs = pd.read_parquet(out_dir / "runs.parquet")
    cfg = read_config(out_dir)
    thresholds = cfg.get("classify", {})
    for name in [by] + ([y] if y else []):
        if name not in runs:
            raise ConfigError([f"{name}: not a column of {out_dir / 'runs.parquet'}"])
    groups = runs.groupby(y, sort=True) if y else [(None, runs)]
    blocks = [(y_value, summary(group, by, thresholds.get("min_circularity", 0.6)))
              for y_value, group in groups]
    manifest_path = out_dir / results.MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    config_path = out_dir / results.CONFIG
    config_text = config_path.read_text() if config_path.is_file() else ""
    return Numbers(runs, by, y, pooled_axes(runs, by, y), blocks,
                   transitions(runs, by, y, thresholds.get("pizza_min_grad_sym", 0.9)), manifest,
                   config_text)


def manifest_line(n: Numbers) -> str:
    m = n.manifest
    precision = ", ".join(sorted(n.runs["precision"].astype(str).unique()))
    return (f"{m.get('n_done', len(n.runs))} runs on {m.get('device_count', '?')} x "
            f"{m.get('device_kind', '?')} ({m.get('platform', '?')}), precision {precision}, "
            f"wall {m.get('wall_s', float('nan')):.0f} s (compile "
            f"{sum(m.get('compile_s', {}).values()):.0f} s), jax "
            f"{m.get('packages', {}).get('jax', '?')}, {m.get('started', '?')}")


def report(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> str:
    """The Markdown report (what `python -m phasescan.report DIR` prints)."""
    n = numbers(out_dir, by, y)
    parts = []
    if n.pooled:
        parts.append(pooled_sentence(n.runs, n.pooled) + "\n")
    for y_value, frame in n.blocks:
        if y:
            parts.append(f"**{y} = {y_value}**\n")
        parts.append(markdown(frame) + "\n")
    parts.append("Transition along " + by + " (first fall below 1/2, 95% bootstrap interval over seeds):\n")
    parts.append(markdown(n.transitions) + "\n")
    if interval_note(n.transitions):
        parts.append(interval_note(n.transitions) + ".\n")
    if n.manifest is not None:
        parts.append(manifest_line(n))
    return "\n".join(parts)


# ---------------------------------------------------------------- one self-contained HTML page

REPORT_HTML = "report.html"
CONVERGENCE = ["runs", "test_acc", "train_loss", "param_norm", "spiking"]
CAPTIONS = {
    "phase_diagram": "Majority algorithm per cell (k/n: runs with it / runs) and the Pizza -> Clock "
                     "boundary (Pizza share = 1/2) with its 95% bootstrap interval over seeds.",
    "metric_heatmaps": "Median gradient symmetricity and distance irrelevance per cell.",
    "paper_scatter": "The paper's views, coloured by gradient symmetricity; unlearned and diverged "
                     "runs as grey crosses.",
    "metric_distributions": "The metrics against the classification thresholds (docs/metrics.md).",
    "circle_shares": "Per cell, what each isolated circle of the embeddings runs, and the share of "
                     "mixed models.",
}
KIND_CAPTIONS = {  # the figures copied from DIR/figures/
    "inspect_": "One model: its embedding on principal-component pairs, the input gradients "
                "(Pizza: on y = x) and the correct-class logit (Clock: flat in a - b). ",
    "circles_": "Each isolated circle of one model's embedding and the logit it gives alone. ",
    "history_": "During training (train.log_every). ",
    "refinement": "Adaptive boundary refinement: the uncertain span per round, the added runs. ",
}
STYLESHEET = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
       max-width: 1180px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
h3 { margin-bottom: 0.3em; }
nav a { margin-right: 1em; } .meta { color: #555; margin-top: 0; }
p.pooled { background: #fff4d6; border-left: 4px solid #E69F00; padding: 6px 10px; }
p.note { color: #444; font-size: 0.92em; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 0.86em; }
th, td { border: 1px solid #d0d0d0; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
table.phase td { text-align: center; font-family: ui-monospace, Menlo, Consolas, monospace; }
.scroll { overflow-x: auto; }
figure { margin: 18px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
pre { background: #f7f7f7; border: 1px solid #e2e2e2; padding: 8px 10px; font-size: 0.82em;
      overflow-x: auto; }
table.manifest td { text-align: left; white-space: normal; overflow-wrap: anywhere; }
table.manifest td:first-child { white-space: nowrap; vertical-align: top; }
table.manifest th { text-align: left; }
pre.config { column-width: 24em; column-rule: 1px solid #e2e2e2; }
details summary { cursor: pointer; color: #333; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def html_table(frame: pd.DataFrame, css: str = "") -> str:
    """A frame as an HTML table, every header and cell escaped."""
    def text(v):
        return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(text(v))}</td>" for v in row) + "</tr>\n"
                   for row in frame.itertuples(index=False))
    cls = f' class="{_e(css)}"' if css else ""
    return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>'


def phase_table_html(runs: pd.DataFrame, x: str, y: str) -> str:
    """The text phase table (table.format_table) as coloured HTML cells: rows y, columns x."""
    cells = table.cells(runs, x, y)
    xs = sorted(cells[x].unique(), key=table._order)
    ys = sorted(cells[y].unique(), key=table._order)
    by_cell = {(r[y], r[x]): r for _, r in cells.iterrows()}
    head = f"<th>{_e(y)} \\ {_e(x)}</th>" + "".join(f"<th>{_e(table.short(v))}</th>" for v in xs)
    rows = []
    for yv in ys:
        tds = []
        for xv in xs:
            r = by_cell.get((yv, xv))
            if r is None:
                tds.append("<td>-</td>")
                continue
            share = r["majority_count"] / r["n"]
            strength = 0.3 + 0.7 * share  # as the phase diagram: a weak majority is paler
            rgb = strength * np.array(colors.to_rgb(COLORS[r["majority"]])) + (1 - strength)
            ink = "#fff" if r["majority"] in ("clock", "diverged") and share > 0.7 else "#000"
            title = ", ".join(f"{a} {r[a]}" for a in ALGORITHMS if r[a])
            tds.append(f'<td style="background:{colors.to_hex(rgb)};color:{ink}" title="{_e(title)}">'
                       f"{_e(table.INITIALS[r['majority']])} {r['majority_count']}/{r['n']}</td>")
        rows.append(f"<tr><th>{_e(table.short(yv))}</th>{''.join(tds)}</tr>")
    legend = ("Cell: majority algorithm, runs with it / runs (hover for every count); "
              + ", ".join(f"{i} {name}" for name, i in table.INITIALS.items()))
    return (f'<div class="scroll"><table class="phase"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(rows) + f'\n</tbody></table></div>\n<p class="note">{_e(legend)}.</p>')


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(name: str, data: bytes, caption: str) -> str:
    return (f'<figure id="fig-{_e(name)}"><img src="{png_data_uri(data)}" alt="{_e(name)}">'
            f"<figcaption><b>{_e(name)}</b>: {_e(caption)}</figcaption></figure>")


def rendered_figures(out_dir: Path, runs: pd.DataFrame, x: str, y: str, pooled: list[str],
                     bounds: pd.DataFrame, thresholds: dict) -> list[tuple[str, bytes, str]]:
    """(name, PNG bytes, caption): the sweep's figures drawn now from its table (so they match
    it), then the figures only a sweep or `python -m phasescan.plot` can draw (single models,
    history, refinement) read from DIR/figures/ when they are there."""
    from io import BytesIO

    from matplotlib import rc_context

    out = []
    with rc_context(STYLE):
        for name, fig in plot.sweep_figures(runs, x, y, pooled, bounds, thresholds):
            buffer = BytesIO()
            fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
            out.append((name, buffer.getvalue(), CAPTIONS.get(name, "")))
    drawn = {name for name, _, _ in out}
    folder = out_dir / plot.FIGURES
    order = ("inspect_", "circles_", "history_", "refinement")  # each model, then over training

    def place(path):
        return next((i for i, start in enumerate(order) if path.stem.startswith(start)), len(order)), path.stem

    for path in sorted(folder.glob("*.png"), key=place) if folder.is_dir() else []:
        if path.stem not in drawn:
            kind = next((text for start, text in KIND_CAPTIONS.items() if path.stem.startswith(start)), "")
            out.append((path.stem, path.read_bytes(), f"{kind}{plot.FIGURES}/{path.name} as drawn "
                        f"at the end of the sweep or by `python -m phasescan.plot`."))
    return out


def manifest_html(manifest: dict) -> str:
    """The manifest's top-level entries as a table (long lists shortened), then the whole file."""
    rows = []
    for key, value in manifest.items():
        if isinstance(value, list) and len(value) > 8:
            text = f"{len(value)} entries: {', '.join(map(str, value[:4]))}, ..."
        elif isinstance(value, dict):
            text = "; ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        rows.append((key, text))
    frame = pd.DataFrame(rows, columns=["entry", "value"])
    return (html_table(frame, "manifest") + "<details><summary>manifest.json, whole</summary><pre>"
            + _e(json.dumps(manifest, indent=2)) + "</pre></details>")


def html_report(out_dir: Path, by: str = "attn_rate", y: str | None = None,
                figure_y: str = "d_model") -> str:
    """The whole report as one HTML page with everything inside it (figures as data URIs, the
    style sheet inline): the text report's tables, the phase table, the figures, the config and
    the manifest. The phase table and the figures use x = `by`, y = `figure_y` (table.resolve_axes)."""
    out_dir = Path(out_dir)
    n = numbers(out_dir, by, y)
    runs = n.runs
    x, fy, fig_pooled = table.resolve_axes(runs, by, y or figure_y)
    cfg = read_config(out_dir)
    bounds = boundary.estimate(runs, x, fy)
    name = (n.manifest or {}).get("sweep") or cfg.get("sweep", {}).get("name", "")
    title = f"phasescan report: {name or out_dir.name}"

    def pooled_par(axes, hint=True):
        text = pooled_sentence(runs, axes, hint)
        return f'<p class="pooled">{_e(text)}</p>' if text else ""

    sections = [
        ("phase-table", "Phase table", pooled_par(fig_pooled, hint=False) + phase_table_html(runs, x, fy)),
    ]
    bound_cols = [c for c in (fy, "boundary", "lo", "hi", "status", "runs_per_cell") if c in bounds]
    note = interval_note(bounds)
    sections.append(("boundary", "Boundary", pooled_par(fig_pooled, hint=False)
                     + f"<p>Per {_e(fy)}: the {_e(x)} where the Pizza share first falls below 1/2 "
                     "(piecewise linear between cells), 95% bootstrap interval over seeds "
                     "(the phase diagram's boundary; figures/boundary.csv).</p>"
                     + html_table(bounds[bound_cols]) + (f'<p class="note">{_e(note)}.</p>' if note else "")
                     + f"<h3>Three estimates of the transition along {_e(by)}</h3>"
                     + pooled_par(n.pooled)
                     + "<p>Where the Pizza share, the share of gradient-symmetric models and the "
                       "share of non-Clock models first fall below 1/2.</p>"
                     + html_table(n.transitions)
                     + (f'<p class="note">{_e(interval_note(n.transitions))}.</p>'
                        if interval_note(n.transitions) else "")))
    figures = rendered_figures(out_dir, runs, x, fy, fig_pooled, bounds, cfg.get("classify", {}))
    sections.append(("figures", "Figures", "\n".join(figure_html(*f) for f in figures)))
    metric_parts, conv_parts = [pooled_par(n.pooled)], [pooled_par(n.pooled)]
    conv_parts.append(f"<p>Median test accuracy, final training loss and parameter norm (the "
                      f"paper's converged runs: loss 1.45e-7, norm 24.4); <code>spiking</code>: the "
                      f"share of runs whose training loss rose above {FIT_LOSS:g} again after they "
                      f"fit.</p>")
    for y_value, frame in n.blocks:
        head = f"<h3>{_e(y)} = {_e(table.short(y_value))}</h3>" if y else ""
        conv = [c for c in CONVERGENCE if c in frame]
        metric_parts.append(head + html_table(frame[[c for c in frame.columns
                                                      if c not in conv or c == "runs"]]))
        conv_parts.append(head + html_table(frame[[by] + conv]))
    sections.append(("metrics", f"Metrics per {by}",
                     "<p>Median [25%, 75%] of each metric, the share of each algorithm and of "
                     "circular models.</p>" + "\n".join(metric_parts)))
    sections.append(("convergence", "Convergence and loss spikes", "\n".join(conv_parts)))
    sections.append(("config", "Configuration (config.yaml)",
                     f'<pre class="config">{_e(n.config_text)}</pre>' if n.config_text
                     else "<p>No config.yaml in this folder (the defaults were assumed).</p>"))
    sections.append(("manifest", "Manifest (manifest.json)",
                     manifest_html(n.manifest) if n.manifest is not None
                     else "<p>No manifest.json in this folder.</p>"))

    meta = _e(f"{out_dir.resolve()}: " + (manifest_line(n) if n.manifest is not None
                                           else f"{len(runs)} runs (no manifest.json)"))
    nav = " ".join(f'<a href="#{sid}">{_e(head)}</a>' for sid, head, _ in sections)
    body = "\n".join(f'<section id="{sid}">\n<h2>{_e(head)}</h2>\n{content}\n</section>'
                     for sid, head, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLESHEET}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<p class=\"meta\">{meta}</p>\n"
            f"<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def write_html(out_dir: Path, by: str = "attn_rate", y: str | None = None) -> Path:
    path = Path(out_dir) / REPORT_HTML
    page = html_report(out_dir, by, y)
    results.write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phasescan.report", description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--by", default="attn_rate", help="the axis along which to bin (default attn_rate)")
    parser.add_argument("--y", default=None, help="a second axis: one block per value (e.g. d_model)")
    parser.add_argument("--html", action="store_true",
                        help=f"write RESULTS_DIR/{REPORT_HTML}: one self-contained page (figures, "
                             "tables, config, manifest) instead of printing Markdown")
    args = parser.parse_args(argv)
    if not (args.results_dir / "runs.parquet").exists():
        print(f"phasescan.report: no runs.parquet in {args.results_dir}", file=sys.stderr)
        return 2
    try:
        if not args.html:
            print(report(args.results_dir, args.by, args.y))
            return 0
        try:
            path = write_html(args.results_dir, args.by, args.y)
        except OSError as error:  # a read-only folder, a full disk
            print(f"phasescan.report: cannot write {error.filename or args.results_dir}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return 1
        print(path)
    except ConfigError as err:
        for problem in err.problems:
            print(f"phasescan.report: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
