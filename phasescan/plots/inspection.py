"""One model looked at closely: which runs to inspect, and their figures (the embedding on its
principal components, the gradient scatter, the correct logit over (a+b, a-b), each circle
alone)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..store import weights
from .style import COLORS


def pick_runs(frame: pd.DataFrame, saved_only: bool, out_dir: Path) -> list[str]:
    """The most Clock-like (largest dist_irr - grad_sym) and the most Pizza-like (largest
    grad_sym - dist_irr) learned run; with `saved_only`, among runs whose weights were kept."""
    pool = frame[~frame["algorithm"].isin(["unlearned", "diverged"])]
    if saved_only:
        pool = pool[[weights.path_of(out_dir, r).is_file() for r in pool["run_id"]]]
    if pool.empty:
        return []
    score = pool["dist_irr"] - pool["grad_sym"]
    picks = [pool.loc[score.idxmax(), "run_id"], pool.loc[score.idxmin(), "run_id"]]
    return list(dict.fromkeys(picks))


def logit_surface(correct: np.ndarray, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """The correct-class logit over (a - b centred on 0, rows; a + b mod p, columns)."""
    surface = np.full((p, p), np.nan)
    surface[(a - b + p // 2) % p, (a + b) % p] = correct
    return surface


def inspection_data(arrays: dict, run: dict, metric_opts: dict, circle_freqs=()) -> dict:
    """Everything the inspection figures draw, computed with the model's own Net; for each of
    `circle_freqs`, the isolated circle (metrics.circle_logits)."""
    import jax
    import jax.numpy as jnp

    from ..engine import data, metrics
    from ..engine.train import Spec, build_net

    p, spec = run["p"], Spec.from_run(run)
    dataset = data.Dataset(p, spec.op, spec.input_format)
    net = build_net(spec, dataset, jnp.float32(run["attn_rate"]))
    params = jax.tree_util.tree_map(jnp.asarray, weights.to_params(arrays))
    rows = np.asarray(net.number_rows(params), np.float64)
    centred = rows - rows.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = vt[:4]
    triples = jnp.asarray(metrics.grad_sym_triples(p, metric_opts["grad_sym_triples"],
                                                   metric_opts["triples_seed"]))
    vectors = net.token_vectors(params, dataset.tokens_of(triples[:, 0], triples[:, 1]))
    grad = jax.jit(jax.vmap(lambda v, c: jax.grad(lambda u: net.logits_from_vectors(params, u)[c])(v)))
    g = np.asarray(grad(vectors, triples[:, 2]), np.float64)  # (n, 2, d)
    logits = np.asarray(jax.jit(net.logits)(params, dataset.tokens))
    labels = np.asarray(dataset.labels)
    a, b = np.asarray(dataset.a), np.asarray(dataset.b)
    half = p // 2
    surface = logit_surface(logits[np.arange(p * p), labels], a, b, p)
    scores = centred @ pcs.T
    circles = []
    for k in circle_freqs:  # the circle's tokens on its own plane, and its logits alone
        on_circle = np.asarray(metrics.circle_rows(jnp.asarray(rows, jnp.float32), float(k)), np.float64)
        plane = np.linalg.svd(on_circle - on_circle.mean(axis=0), full_matrices=False)[2][:2]
        isolated = np.asarray(jax.jit(lambda k: metrics.circle_logits(net, params, dataset, k))(float(k)))
        circles.append({"k": int(k), "points": (on_circle - on_circle.mean(axis=0)) @ plane.T,
                        "surface": logit_surface(isolated[np.arange(p * p), labels], a, b, p)})
    return {"scores": scores, "var_share": s[:4] ** 2 / np.sum(s ** 2),
            "pair_freqs": [pair_frequency(scores[:, 0:2]), pair_frequency(scores[:, 2:4])],
            "grad_a": g[:, 0] @ pcs[:2].T, "grad_b": g[:, 1] @ pcs[:2].T, "surface": surface,
            "diff_range": (-half, p - 1 - half), "circles": circles}


def pair_frequency(scores: np.ndarray) -> int:
    """The frequency k (1..p//2) holding most of the Fourier energy of a pair of PC scores (p, 2):
    on a circle of frequency k token t sits at angle 2 pi k t / p."""
    power = np.sum(np.abs(np.fft.rfft(scores, axis=0)[1:]) ** 2, axis=1)
    return int(np.argmax(power)) + 1


def inspection(row: pd.Series, d: dict) -> Figure:
    p = int(row["p"])
    fig = Figure(figsize=(10.5, 8.4), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    cyclic = colormaps["twilight"]
    for ax, (i, j), k in zip((ax1, ax2), ((0, 1), (2, 3)), d["pair_freqs"]):
        u, v = d["scores"][:, i], d["scores"][:, j]
        # Coloured by the angle a frequency-k circle gives each token: neighbours share a hue.
        ax.scatter(u, v, c=(k * np.arange(p)) % p, cmap=cyclic, vmin=0, vmax=p, s=40,
                   edgecolors="black", linewidths=0.4)
        for t in range(p):
            ax.annotate(str(t), (u[t], v[t]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xlabel(f"PC{i + 1} ({100 * d['var_share'][i]:.0f}% of variance)")
        ax.set_ylabel(f"PC{j + 1} ({100 * d['var_share'][j]:.0f}% of variance)")
        ax.set_title(f"Embedding, tokens 0..{p - 1} (colour: {k}t mod p, k = {k})", loc="left")
        ax.set_aspect("equal", adjustable="datalim")
    ga, gb = d["grad_a"], d["grad_b"]
    for k, (color, marker) in enumerate((("#0072B2", "o"), ("#E69F00", "s"))):
        ax3.scatter(ga[:, k], gb[:, k], s=14, color=color, marker=marker, alpha=0.7,
                    label=f"projection on PC{k + 1}")
    span = np.nanmax(np.abs(np.concatenate([ga.ravel(), gb.ravel()]))) * 1.05 or 1.0
    ax3.plot([-span, span], [-span, span], color="black", lw=1, ls="--", label="y = x")
    ax3.set_xlim(-span, span)
    ax3.set_ylim(-span, span)
    ax3.set_aspect("equal")
    ax3.set_xlabel("d logit_c / d E[a]  (projected)")
    ax3.set_ylabel("d logit_c / d E[b]  (projected)")
    ax3.set_title(f"Input gradients, {len(ga)} triples (Pizza: on y = x)", loc="left")
    ax3.legend(loc="upper left", framealpha=0.9)
    lo, hi = d["diff_range"]
    image = ax4.imshow(d["surface"], origin="lower", aspect="auto", cmap="viridis",
                       extent=(-0.5, p - 0.5, lo - 0.5, hi + 0.5))
    for axis in (ax4.xaxis, ax4.yaxis):  # token values: whole numbers only
        axis.set_major_locator(MaxNLocator(integer=True))
    ax4.set_xlabel("a + b (mod p)")
    ax4.set_ylabel("a - b (mod p, centred)")
    ax4.set_title("Correct-class logit (Clock: flat in a - b)", loc="left")
    fig.colorbar(image, ax=ax4, label="logit of c = a + b")
    fig.suptitle(f"run {row['run_id']}: {row['algorithm']}  |  attention rate {row['attn_rate']:.3g}, "
                 f"d_model {row['d_model']}, p {p}, seed {row['seed']}  |  grad_sym "
                 f"{row['grad_sym']:.2f}, dist_irr {row['dist_irr']:.2f}, circularity "
                 f"{row['circularity']:.2f}", fontsize=10)
    return fig


def circles_figure(row: pd.Series, d: dict) -> Figure:
    """One column per isolated circle: its tokens on the circle, coloured by the angle k t mod p
    (a clean circle is a ring in that order), and the correct-class logit of the network run on
    it alone over (a + b, a - b) (Clock: flat in a - b; Pizza: bands in a - b), with its FVEs."""
    p, circles = int(row["p"]), d["circles"]
    fig = Figure(figsize=(3.6 * max(len(circles), 1), 6.6), layout="constrained")
    axes = fig.subplots(2, max(len(circles), 1), squeeze=False)
    lo, hi = d["diff_range"]
    for j, circle in enumerate(circles):
        k, top, bottom = circle["k"], axes[0, j], axes[1, j]
        label = list(row["circle_algorithms"])[j]
        clock, pizza = list(row["circle_clock_fve"])[j], list(row["circle_pizza_fve"])[j]
        u, v = circle["points"][:, 0], circle["points"][:, 1]
        top.scatter(u, v, c=(k * np.arange(p)) % p, cmap=colormaps["twilight"], vmin=0, vmax=p,
                    s=36, edgecolors="black", linewidths=0.4)
        for t in range(p):
            top.annotate(str(t), (u[t], v[t]), textcoords="offset points", xytext=(3, 2), fontsize=6)
        top.set_aspect("equal", adjustable="datalim")
        top.set_title(f"circle k = {k}: {label}", loc="left", color=COLORS.get(label, "black"))
        for axis in (bottom.xaxis, bottom.yaxis):
            axis.set_major_locator(MaxNLocator(integer=True))
        image = bottom.imshow(circle["surface"], origin="lower", aspect="auto", cmap="viridis",
                              extent=(-0.5, p - 0.5, lo - 0.5, hi + 0.5))
        bottom.set_title(f"isolated: Clock FVE {clock:.2f}, Pizza FVE {pizza:.2f}", loc="left",
                         fontsize=9)
        bottom.set_xlabel("a + b (mod p)")
        fig.colorbar(image, ax=bottom, shrink=0.8)
    axes[1, 0].set_ylabel("a - b (mod p, centred)")
    axes[0, 0].set_ylabel("the circle's own plane")
    fig.suptitle(f"run {row['run_id']}: {row['algorithm']}, attention rate {row['attn_rate']:.3g} "
                 f"-- each circle of the embedding alone (docs/metrics.md, circles)", fontsize=10)
    return fig

