"""One self-contained HTML page of a results folder (`python -m phasescan.report DIR --html`):
the phase table, the boundaries, the figures as data URIs, the per-bin metrics, convergence,
config.yaml and manifest.json; no scripts, no links out."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colors

from ..analysis import table
from ..engine.train import FIT_LOSS
from ..plots import draw
from ..plots.style import COLORS, STYLE
from ..core.classify import ALGORITHMS
from ..store import results
from .markdown import CIRCLE_NOTE, DYNAMICS_TEXT, interval_note, manifest_line, numbers, pooled_sentence

REPORT_HTML = "report.html"
CONVERGENCE = ["runs", "test_acc", "train_loss", "param_norm", "spiking"]
CAPTIONS = {
    "phase_diagram": "Majority algorithm per cell (k/n: runs with it / runs) and the Pizza -> Clock "
                     "boundary (Pizza share = 1/2) with its 95% bootstrap interval over seeds; dashed "
                     "outlines: fragile cells, whose majority rounding could decide (when `report "
                     "--stability` compared the folder with another training).",
    "metric_heatmaps": "Median gradient symmetricity and distance irrelevance per cell.",
    "paper_scatter": "The paper's views, coloured by gradient symmetricity; unlearned and diverged "
                     "runs as grey crosses.",
    "metric_distributions": "The metrics against the classification thresholds (docs/metrics.md).",
    "circle_shares": "Per cell, what each isolated circle of the embeddings runs, and the share of "
                     "mixed models.",
    "learning_phase_diagram": "Majority learning phase per cell (comprehension, grokking, memorization, "
                              "confusion: docs/metrics.md, Learning phases), in its own colours.",
    "phase_algorithm": "Learning phase x algorithm: runs of each phase that learned each algorithm, and "
                       "their share of the phase's runs.",
    "dynamics_heatmaps": "Median memorize_step, generalize_step (over the runs that reached them) and "
                         "generalization_delay per cell.",
}
KIND_CAPTIONS = {  # the figures copied from DIR/figures/
    "inspect_": "One model: its embedding on principal-component pairs, the input gradients "
                "(Pizza: on y = x) and the correct-class logit (Clock: flat in a - b). ",
    "circles_": "Each isolated circle of one model's embedding and the logit it gives alone. ",
    "history_": "During training (train.log_every). ",
    "refinement": "Adaptive boundary refinement: the uncertain span per round, the added runs. ",
    "boundary_over_p": "The p ladder: the Pizza -> Clock boundary against p per series (d = 128, d/p near "
                       "the paper's), by the labels and by grad_sym alone, with 95% bootstrap bars. ",
}
DRAWN_BY = {"boundary_over_p": "by `python -m phasescan.report DIR --paper --figure PATH`"}
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


def phase_table_html(runs: pd.DataFrame, x: str, y: str, pooled: list[str]) -> str:
    """The text phase table (table.format_table) as coloured HTML cells: rows y (per task of a
    sweep over several: table.by_task), columns x."""
    xs = sorted(runs[x].unique(), key=table._order)
    tasks = table.by_task(runs, pooled)
    head = (f"<th>{_e(', '.join([*tasks[0][0], y]))} \\ {_e(x)}</th>"
            + "".join(f"<th>{_e(table.short(v))}</th>" for v in xs))
    rows = []
    for task, group in tasks:
        cells = table.cells(group, x, y)
        by_cell = {(r[y], r[x]): r for _, r in cells.iterrows()}
        for yv in sorted(cells[y].unique(), key=table._order):
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
            rows.append(f"<tr><th>{_e(table.task_head(task) + table.short(yv))}</th>{''.join(tds)}</tr>")
    legend = ("Cell: majority algorithm, runs with it / runs (hover for every count); "
              + ", ".join(f"{i} {name}" for name, i in table.INITIALS.items()))
    return (f'<div class="scroll"><table class="phase"><thead><tr>{head}</tr></thead><tbody>\n'
            + "\n".join(rows) + f'\n</tbody></table></div>\n<p class="note">{_e(legend)}.</p>')


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(name: str, data: bytes, caption: str) -> str:
    return (f'<figure id="fig-{_e(name)}"><img src="{png_data_uri(data)}" alt="{_e(name)}">'
            f"<figcaption><b>{_e(name)}</b>: {_e(caption)}</figcaption></figure>")


def rendered_figures(out_dir: Path, x: str, y: str, pooled: list[str], parts,
                     thresholds: dict) -> list[tuple[str, bytes, str]]:
    """(name, PNG bytes, caption): the sweep's figures drawn now from its table (so they match
    it), then the figures only a sweep or `python -m phasescan.plot` can draw (single models,
    history, refinement) read from DIR/figures/ when they are there."""
    from io import BytesIO

    from matplotlib import rc_context

    out = []
    with rc_context(STYLE):
        for name, kind, fig in draw.every_sweep_figure(parts, x, y, pooled, thresholds, out_dir=out_dir):
            buffer = BytesIO()
            fig.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
            out.append((name, buffer.getvalue(), CAPTIONS.get(kind, "")))
    drawn = {name for name, _, _ in out}
    folder = out_dir / draw.FIGURES
    order = ("inspect_", "circles_", "history_", "refinement")  # each model, then over training

    def place(path):
        return next((i for i, start in enumerate(order) if path.stem.startswith(start)), len(order)), path.stem

    for path in sorted(folder.glob("*.png"), key=place) if folder.is_dir() else []:
        if path.stem not in drawn:
            kind = next((text for start, text in KIND_CAPTIONS.items() if path.stem.startswith(start)), "")
            by = next((text for start, text in DRAWN_BY.items() if path.stem.startswith(start)),
                      "at the end of the sweep or by `python -m phasescan.plot`")
            out.append((path.stem, path.read_bytes(), f"{kind}{draw.FIGURES}/{path.name} as drawn {by}."))
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
    cfg = results.read_config(out_dir)
    parts = draw.task_bounds(runs, x, fy, fig_pooled)  # a sweep over p: per p
    bounds = draw.joined_bounds(parts)
    per_task = table.within_task(fig_pooled)  # what the phase table and boundary pool
    name = (n.manifest or {}).get("sweep") or cfg.get("sweep", {}).get("name", "")
    title = f"phasescan report: {name or out_dir.name}"

    def pooled_par(axes, hint=True):
        text = pooled_sentence(runs, axes, hint)
        return f'<p class="pooled">{_e(text)}</p>' if text else ""

    sections = [
        ("phase-table", "Phase table", pooled_par(per_task, hint=False) + phase_table_html(runs, x, fy, fig_pooled)),
    ]
    bound_cols = [c for c in (*parts[0][0], fy, "boundary", "lo", "hi", "status", "replaced_by", "against_boundary",
                              "against_lo", "against_hi", "against_status", "against_runs", "runs_per_cell")
                  if c in bounds]
    note = interval_note(bounds)
    sections.append(("boundary", "Boundary", pooled_par(per_task, hint=False)
                     + f"<p>Per {_e(fy)}: the {_e(x)} where the Pizza share of all runs first falls below "
                     "1/2 (piecewise linear between cells) and the class that takes over there "
                     "(<code>replaced_by</code>); then the Pizza -> Clock boundary, the same crossing among "
                     "the runs labelled Pizza or Clock only (<code>against_*</code>; <code>against_runs</code>: "
                     "such runs per cell), the one the phase diagram draws. 95% bootstrap intervals over "
                     "seeds; figures/boundary.csv.</p>"
                     + html_table(bounds[bound_cols]) + (f'<p class="note">{_e(note)}.</p>' if note else "")
                     + f"<h3>Four estimates of the transition along {_e(by)}</h3>"
                     + pooled_par(n.pooled)
                     + "<p>Where the Pizza share, the share of gradient-symmetric models, the "
                       "share of non-Clock models and the Pizza share of Pizza and Clock runs first fall "
                       "below 1/2.</p>"
                     + html_table(n.transitions)
                     + (f'<p class="note">{_e(interval_note(n.transitions))}.</p>'
                        if interval_note(n.transitions) else "")))
    figures = rendered_figures(out_dir, x, fy, fig_pooled, parts, cfg.get("classify", {}))
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
                     f"<p>{_e(CIRCLE_NOTE)} Then the share of each algorithm and of circular "
                     "models.</p>" + "\n".join(metric_parts)))
    sections.append(("convergence", "Convergence and loss spikes", "\n".join(conv_parts)))
    if n.joint is not None:
        parts = [pooled_par(n.pooled), f"<p>{_e(DYNAMICS_TEXT.format(by=by))}</p>"]
        parts += [(f"<h3>{_e(y)} = {_e(table.short(y_value))}</h3>" if y else "") + html_table(frame)
                  for y_value, frame in n.dynamics]
        parts.append("<h3>Learning phase x algorithm (runs)</h3>" + html_table(n.joint))
        sections.append(("dynamics", "Learning dynamics", "\n".join(parts)))
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

