"""phasescan.report: a sweep's numbers per attention-rate bin and the transition's location, and
the self-contained HTML page (`--html`)."""
import base64
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from phasescan import report
from phasescan.reports import markdown


def synthetic_runs(tmp_path, switch=0.55):
    """8 seeds per attention rate; Pizza (symmetric) below `switch`, Clock above."""
    rates = np.round(np.linspace(0, 1, 11), 2)
    rows = []
    for rate in rates:
        for seed in range(8):
            pizza = rate < switch
            rows.append({"attn_rate": rate, "d_model": 128, "seed": seed, "precision": "float32",
                         "algorithm": "pizza" if pizza else "clock",
                         "grad_sym": 0.99 if pizza else 0.3 + 0.01 * seed,
                         "dist_irr": 0.2 if pizza else 0.85,
                         "dist_irr_top_wrong": 0.25 if pizza else 0.83, "test_acc": 1.0,
                         "circularity": 0.999 if seed < 2 else 0.9,
                         "train_loss": 1.45e-7, "param_norm": 24.4,
                         "spike_loss": 2e-2 if seed == 0 else 9e-6})  # seed 0 spiked
    pd.DataFrame(rows).to_parquet(tmp_path / "runs.parquet")
    return tmp_path


def test_summary_bins_and_shares(tmp_path):
    runs = pd.read_parquet(synthetic_runs(tmp_path) / "runs.parquet")
    table = markdown.summary(runs, "attn_rate", min_circularity=0.6)
    assert len(table) == 11 and set(table["runs"]) == {8}
    first, last = table.iloc[0], table.iloc[-1]
    assert first["pizza"] == "1.00" and first["clock"] == "0.00" and last["clock"] == "1.00"
    assert first["grad_sym"].startswith("0.990") and first["circ>=0.995"] == "0.25"
    assert first["dist_irr_top_wrong"].startswith("0.250") and last["dist_irr_top_wrong"].startswith("0.830")
    assert first["train_loss"] == "1.45e-07" and first["param_norm"] == "24.4"
    assert first["spiking"] == "0.12"  # 1 of 8 seeds rose above the fit level again
    assert first["circ>=0.6"] == "1.00"


def test_transition_is_between_the_last_pizza_and_first_clock_rate(tmp_path):
    runs = pd.read_parquet(synthetic_runs(tmp_path, switch=0.55) / "runs.parquet")
    found = markdown.transitions(runs, "attn_rate", None, 0.9, n_boot=50).set_index("share")
    for share in ("pizza share", "grad_sym >= 0.9 share", "non-clock share"):
        assert 0.5 < found.loc[share, "boundary"] < 0.6  # the shares jump from 1 at 0.5 to 0 at 0.6
        assert found.loc[share, "status"] == "crossing"


def test_cli_prints_markdown_and_refuses_a_bad_axis(tmp_path, capsys):
    folder = synthetic_runs(tmp_path)
    assert report.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(markdown.CIRCLE_NOTE)  # the per-circle comparison leads (IQR said there)
    out = out[len(markdown.CIRCLE_NOTE):].lstrip()
    assert out.startswith("| attn_rate | runs | grad_sym |") and "non-clock share" in out
    assert report.main([str(folder), "--by", "width"]) == 2
    assert "width: not a column" in capsys.readouterr().err
    assert report.main([str(tmp_path / "missing")]) == 2


# ---------------------------------------------------------------- pooling and the HTML page

class Page(HTMLParser):
    """The parts of report.html a test looks at: tags, attributes, sections, tables, text."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.sections, self.tables, self.text = [], [], [], [], []
        self._table = self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.attrs.append((tag, attrs))
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "table":
            self._table = {"class": attrs.get("class", ""), "section": self.sections[-1], "rows": []}
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self.tables.append(self._table)
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data


def two_widths(tmp_path):
    """The synthetic sweep at two widths (8 seeds each): d_model is swept."""
    runs = pd.read_parquet(synthetic_runs(tmp_path) / "runs.parquet")
    both = pd.concat([runs, runs.assign(d_model=64)], ignore_index=True)
    both.to_parquet(tmp_path / "runs.parquet")
    return tmp_path, both


def test_pooled_axes_are_named_with_their_values(tmp_path):
    folder, runs = two_widths(tmp_path)
    text = markdown.report(folder)  # bins by attn_rate only: the widths are put together
    text = text[len(markdown.CIRCLE_NOTE):].lstrip()
    assert text.startswith("Pooled over d_model = 64, 128")
    assert "d_model = 64, 128" in markdown.pooled_sentence(runs, ["d_model"])
    assert "Pooled" not in markdown.report(folder, y="d_model")  # one block per width: nothing pooled
    one = tmp_path / "one"
    one.mkdir()
    assert "Pooled" not in markdown.report(synthetic_runs(one))  # one width: nothing to say


def test_html_report_is_one_self_contained_page(tmp_path):
    folder, runs = two_widths(tmp_path)
    (folder / "config.yaml").write_text("sweep:\n  name: t<script>alert(1)</script>\n")
    (folder / "manifest.json").write_text(json.dumps({
        "sweep": "t<b>x</b>", "n_done": len(runs), "device_kind": "cpu & <gpu>", "wall_s": 3.0,
        "run_ids": [f"r{i}" for i in range(len(runs))]}))
    from matplotlib.figure import Figure  # a figure another command drew: copied, captioned with its command
    (folder / "figures").mkdir()
    Figure(figsize=(2, 2)).savefig(folder / "figures" / "boundary_over_p.png")
    assert report.main([str(folder), "--html"]) == 0
    page = Page()
    page.feed((folder / report.REPORT_HTML).read_text(encoding="utf-8"))

    assert page.sections == ["phase-table", "boundary", "figures", "metrics", "convergence",
                             "config", "manifest"]
    # Escaped: the config's and manifest's markup is text, never a tag
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    text = "".join(page.text)
    assert "alert(1)</script>" in text and "cpu & <gpu>" in text and "t<b>x</b>" in text
    # Self-contained: every image a PNG data URI, every link inside the page, no url() in the CSS
    images = [a["src"] for tag, a in page.attrs if tag == "img"]
    assert len(images) >= 4
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attrs in page.attrs:
        for key in ("href", "src", "action", "srcset", "poster"):
            assert attrs.get(key) is None or attrs[key].startswith(("#", "data:")), (tag, attrs)
    assert "url(" not in text and "@import" not in text
    assert ("figures/boundary_over_p.png as drawn by `python -m phasescan.report DIR --paper --figure PATH`."
            in text)
    # The tables match the runs: phase table rows = widths, its cells' counts add up to the runs
    phase = next(t for t in page.tables if t["class"] == "phase")
    assert [row[0] for row in phase["rows"][1:]] == ["64", "128"]
    assert sum(int(cell.split("/")[1]) for row in phase["rows"][1:] for cell in row[1:]) == len(runs)
    for section in ("metrics", "convergence"):
        table = next(t for t in page.tables if t["section"] == section)
        header, body = table["rows"][0], table["rows"][1:]
        assert [float(r[0]) for r in body] == sorted(runs["attn_rate"].unique())
        assert sum(int(r[header.index("runs")]) for r in body) == len(runs)
    assert "spiking" in next(t for t in page.tables if t["section"] == "convergence")["rows"][0]
    assert "Pooled over d_model = 64, 128" in text  # the per-bin tables put the widths together
    manifest = next(t for t in page.tables if t["section"] == "manifest")
    assert ["n_done", str(len(runs))] in manifest["rows"]
