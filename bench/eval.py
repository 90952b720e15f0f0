"""Evaluate lineage detection on every labelled pair of a zoo (or of real checkpoints plus a pairs file).

    python -m bench.eval [--zoo DIR] [--methods lineage awm huref reef] [--negatives all|roots] [--out DIR]
    python -m bench.eval --models DIR --pairs pairs.txt     # real checkpoints: "A B 1|0 [category]" per line
    python -m bench.eval --methods lineage --reuse bench/results/small/scores.csv  # re-score one method

Positives: every (ancestor, descendant) pair of the manifest. Negatives: every pair whose root sets are
disjoint (``--negatives roots``: only each model against the other families' roots, plus root pairs; the
CI test uses that to stay within minutes). Writes ``scores.csv``, ``table.md``, ``roc.png``, ``scores.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fingerprint.canonical import CanonicalModel, open_model
from fingerprint.errors import FingerprintError
from fingerprint.similarity import METHODS
from zoo.manifest import Manifest, ZooModel, read_manifest

RESULTS = Path(__file__).resolve().parent / "results"


def read_pairs(path: Path) -> list[tuple[str, str, int, str]]:
    """A pairs file: ``A B 1|0 [category]`` per line, ``#`` comments."""
    pairs = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and not f[0].startswith("#"):
            pairs.append((f[0], f[1], int(f[2]), f[3] if len(f) > 3 else ("positive" if f[2] == "1" else "negative")))
    return pairs


def zoo_pairs(manifest: Manifest, negatives: str = "all") -> list[tuple[str, str, int, str]]:
    """(ancestor or model A, descendant or model B, label, category) for a zoo manifest."""
    models = manifest.by_name()

    def ancestors(n: str) -> set[str]:
        out: set[str] = set()
        for p in models[n].parents:
            out |= {p} | ancestors(p)
        return out

    pairs = []
    for n, m in models.items():
        for a in sorted(ancestors(n)):
            pairs.append((a, n, 1, m.category))
    names = sorted(models)
    roots = {n for n, m in models.items() if m.is_base}
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            if set(models[x].roots) & set(models[y].roots):
                continue
            if negatives == "roots" and x not in roots and y not in roots:
                continue
            pairs.append((x, y, 0, _negative_kind(models, x, y)))
    return pairs


def _negative_kind(models: dict[str, ZooModel], x: str, y: str) -> str:
    """Which hard-negative case a cross-family pair is: its roots share the random init (same seed and
    shape), the training text, the tokenizer, or nothing."""
    rx = [models[r].args for r in models[x].roots]
    ry = [models[r].args for r in models[y].roots]
    same = lambda k: any(a.get(k) == b.get(k) for a in rx for b in ry)  # noqa: E731
    if any(a.get("seed") == b.get("seed") and a.get("arch") == b.get("arch") and a.get("gqa") == b.get("gqa")
           for a in rx for b in ry):
        return "negative: same init"
    if same("data") and same("arch"):
        return "negative: same data"
    if same("tokenizer"):
        return "negative: same tokenizer"
    return "negative: other"


class Scorer:
    """Scores pairs with each method, caching what is per model (REEF representations) and per pair.

    ``second`` is the weights' outcome after the representation second opinion
    (:mod:`fingerprint.similarity.second`), asked only for the pairs the weights leave ``inconclusive`` or
    ``shared_init``, calibrated on ``backgrounds`` (the zoo's bases) the weights call independent of each
    side; its score is the pair's representation CKA where it was asked. ``changes`` lists what it moved.
    """

    def __init__(self, root: Path, backgrounds: list[str] | None = None) -> None:
        from fingerprint.similarity.second import Representations

        self.root = root
        self.reps = Representations()
        self.backgrounds = list(backgrounds or [])
        self._lineage: dict[tuple[str, str], Any] = {}
        self._independent: dict[tuple[str, str], bool] = {}
        self.changes: list[dict[str, Any]] = []
        self.asked = 0

    def open(self, name: str) -> CanonicalModel:
        return open_model(self.root / name)

    def score(self, method: str, a: str, b: str) -> tuple[float, str]:
        try:
            if method == "reef":  # cached representations per model, not the per-pair path
                return self._reef(a, b)
            if method == "second":
                return self._second(a, b)
            if method == "lineage":
                r = self._lineage_of(a, b)
                return r.score, r.outcome
            if method in METHODS:
                r = METHODS[method](self.open(a), self.open(b))
                return r.score, r.verdict
        except FingerprintError as e:
            return math.nan, f"error: {e}"
        raise ValueError(method)

    def _lineage_of(self, a: str, b: str) -> Any:
        if (a, b) not in self._lineage:
            self._lineage[(a, b)] = METHODS["lineage"](self.open(a), self.open(b))
        return self._lineage[(a, b)]

    def _second(self, a: str, b: str) -> tuple[float, str]:
        from fingerprint.similarity.second import UNCERTAIN, combine, second_opinion

        outcome = self._lineage_of(a, b).outcome
        if outcome not in UNCERTAIN:
            return math.nan, outcome
        self.asked += 1
        op = second_opinion(self.open(a), self.open(b), [self.open(x) for x in self.backgrounds], self.reps,
                            independent=self._is_independent)
        final, by = combine(outcome, op)
        self.changes.append({"a": a, "b": b, "weights": outcome, "final": final, "by": by, "finding": op.finding,
                             "note": op.note})
        return (op.score if op.score is not None else math.nan), final

    def _is_independent(self, x: CanonicalModel, y: CanonicalModel) -> bool:
        key = (str(x.repo.name), str(y.repo.name))
        if key not in self._independent:
            from fingerprint.similarity.lineage import compare_lineage

            self._independent[key] = compare_lineage(x, y).verdict == "independent"
        return self._independent[key]

    def _reef(self, a: str, b: str) -> tuple[float, str]:
        from fingerprint.similarity.second import representation_cka

        xa, xb = self.reps.of(self.open(a)), self.reps.of(self.open(b))
        if xa is None or xb is None:  # REEF needs a runnable HF model: GGUF, fp8 and wrappers are skipped
            return math.nan, "skipped: not runnable"
        return representation_cka(xa, xb), "-"


def roc(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    thr = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.array([0.0, *[(pos >= t).mean() for t in thr], 1.0])
    fpr = np.array([0.0, *[(neg >= t).mean() for t in thr], 1.0])
    return fpr, tpr


def metrics(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """AUC (Mann-Whitney, ties count half), pAUC for FPR ≤ 5% (normalized to [0, 1]), TPR at 1% FPR,
    negative mean/std/max, weakest positive and its margin over the negative max in negative σ."""
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if not len(pos) or not len(neg):
        return {}
    auc = float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))
    fpr, tpr = roc(pos, neg)
    grid = np.linspace(0, 0.05, 501)
    pauc = float(np.trapezoid(np.interp(grid, fpr, tpr), grid) / 0.05)
    thr = np.quantile(neg, 0.99, method="higher") if len(neg) >= 100 else neg.max()
    tpr1 = float((pos > thr).mean())
    sd = float(neg.std(ddof=1)) if len(neg) > 1 else float("nan")
    return {"auc": auc, "pauc5": pauc, "tpr_at_1fpr": tpr1, "neg_mean": float(neg.mean()), "neg_std": sd,
            "neg_max": float(neg.max()), "pos_min": float(pos.min()),
            "margin_sigma": float((pos.min() - neg.max()) / sd) if sd and sd > 0 else float("nan"),
            "n_pos": len(pos), "n_neg": len(neg)}


#: verdicts a weight method reports (REEF's column is the raw score)
VERDICTS = ("derived", "shared_init", "inconclusive", "independent")


def write_report(rows: list[dict[str, Any]], methods: list[str], out: Path, title: str,
                 changes: list[dict[str, Any]] | None = None, asked: int = 0,
                 relations: dict[str, tuple[int, int]] | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"### {title}", "", "| method | AUC | pAUC(FPR≤5%) | TPR@1%FPR | neg mean ± std | neg max | weakest pos | margin (σ) | false `derived` | positives `derived` |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    scored = [m for m in methods if m != "second"]  # the second opinion's column is a verdict, scored on a few pairs
    for m in methods:
        pos = np.array([r[m] for r in rows if r["label"] == 1], dtype=float)
        neg = np.array([r[m] for r in rows if r["label"] == 0], dtype=float)
        if m == "second":
            fd = sum(1 for r in rows if r["label"] == 0 and r[f"{m}_verdict"] == "derived")
            pdv = sum(1 for r in rows if r["label"] == 1 and r[f"{m}_verdict"] in ("derived", "shared_init"))
            summary[m] = {"false_derived": fd, "positives_derived": pdv}
            lines.append(f"| {m} | - | - | - | - | - | - | - | {fd}/{len(neg)} | {pdv}/{len(pos)} |")
            continue
        k = metrics(pos, neg)
        summary[m] = k
        if not k:
            continue
        fd = sum(1 for r in rows if r["label"] == 0 and r[f"{m}_verdict"] == "derived")
        # a shared_init pair is derived by the weights, flagged (a merge with an unrelated model is one at the pair level)
        pdv = sum(1 for r in rows if r["label"] == 1 and r[f"{m}_verdict"] in ("derived", "shared_init"))
        verdicts = m in ("lineage", "second", "awm", "huref")  # REEF here is the raw score, no per-pair verdict
        fd_s = f"{fd}/{k['n_neg']}" if verdicts else "-"
        pd_s = f"{pdv}/{k['n_pos']}" if verdicts else "-"
        lines.append(f"| {m} | {k['auc']:.3f} | {k['pauc5']:.3f} | {k['tpr_at_1fpr']:.3f} | {k['neg_mean']:.4f} ± {k['neg_std']:.4f} "
                     f"| {k['neg_max']:.4f} | {k['pos_min']:.4f} | {k['margin_sigma']:.1f} | {fd_s} | {pd_s} |")
    cats = sorted({r["category"] for r in rows if r["label"] == 1})
    rel = relations is not None  # the typed relation of each direct edge (bench.relations), right / n
    lines += ["", "Per category: min / mean score of positives; mean / max of negatives, with false `derived` counts"
              + ("; relation: direct edges typed right (`lineage relation`; merges: method and weights within 0.02)"
                 if rel else ""), "",
              "| category | n | " + " | ".join(scored) + (" | relation" if rel else "") + " |",
              "|---|---|" + "---|" * (len(scored) + rel)]
    for c in cats:
        cr = [r for r in rows if r["label"] == 1 and r["category"] == c]
        cells = []
        for m in scored:
            v = np.array([r[m] for r in cr], dtype=float)
            v = v[~np.isnan(v)]
            cells.append(f"{v.min():.3f} / {v.mean():.3f}" if len(v) else "-")
        if relations is not None:
            got = relations.get(c)
            cells.append(f"{got[0]}/{got[1]}" if got else "-")
        lines.append(f"| {c} | {len(cr)} | " + " | ".join(cells) + " |")
    for c in sorted({r["category"] for r in rows if r["label"] == 0}):
        cr = [r for r in rows if r["label"] == 0 and r["category"] == c]
        cells = []
        for m in scored:
            v = np.array([r[m] for r in cr], dtype=float)
            v = v[~np.isnan(v)]
            fd = sum(1 for r in cr if r[f"{m}_verdict"] == "derived")
            cells.append(f"{v.mean():.3f} / {v.max():.3f}" + (f" ({fd} derived)" if m != "reef" else "") if len(v) else "-")
        lines.append(f"| {c} | {len(cr)} | " + " | ".join(cells + (["-"] if rel else [])) + " |")
    lines += _verdict_table(rows, [m for m in methods if m in ("lineage", "second")])
    if changes is not None:
        lines += _second_summary(changes, asked)
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plots(rows, scored, out)
    return text


def _second_summary(asked_pairs: list[dict[str, Any]], asked: int) -> list[str]:
    """What the second opinion found on the pairs it was asked about: counts per (weights' outcome,
    finding, final outcome), and every pair whose outcome it changed, with its evidence."""
    from collections import Counter

    kinds = Counter((c["weights"], c["finding"], c["final"]) for c in asked_pairs)
    out = ["", f"Second opinion: asked on {asked} pairs the weights left inconclusive or shared_init "
           "(weights → finding → final: pairs):", ""]
    out += [f"- {w} → {f} → {t}: {n}" for (w, f, t), n in sorted(kinds.items())]
    changed = [c for c in asked_pairs if c["final"] != c["weights"]]
    out += ["", f"Changed by the second opinion: {len(changed)}" + (":" if changed else ".")]
    out += [f"- {c['a']} / {c['b']}: {c['weights']} → {c['final']} ({c['note']})" for c in changed]
    return out


def _verdict_table(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    """Verdict counts per category (derived / shared_init / inconclusive / independent) for ``methods``."""
    if not methods:
        return []
    out = ["", "Verdicts per category: " + " / ".join(VERDICTS), "",
           "| category | n | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for c in sorted({r["category"] for r in rows}, key=lambda c: (c.startswith("negative"), c)):
        cr = [r for r in rows if r["category"] == c]
        cells = [" / ".join(str(sum(1 for r in cr if r[f"{m}_verdict"] == v)) for v in VERDICTS) for m in methods]
        out.append(f"| {c} | {len(cr)} | " + " | ".join(cells) + " |")
    return out


def _plots(rows: list[dict[str, Any]], methods: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for m in methods:
        pos = np.array([r[m] for r in rows if r["label"] == 1], dtype=float)
        neg = np.array([r[m] for r in rows if r["label"] == 0], dtype=float)
        pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
        if len(pos) and len(neg):
            fpr, tpr = roc(pos, neg)
            ax.plot(fpr, tpr, label=f"{m} (AUC {metrics(pos, neg)['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.5)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, all labelled pairs")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.6), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, m in zip(axes[0], methods):
        for lab, color, name in ((0, "tab:blue", "negatives"), (1, "tab:red", "positives")):
            v = np.array([r[m] for r in rows if r["label"] == lab], dtype=float)
            v = v[~np.isnan(v)]
            ax.scatter(lab + rng.uniform(-0.2, 0.2, len(v)), v, s=6, alpha=0.6, color=color, label=name)
        ax.set(xticks=[0, 1], xticklabels=["neg", "pos"], title=m)
    axes[0][0].set_ylabel("score")
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)


def evaluate(root: Path, pairs: list[tuple[str, str, int, str]], methods: list[str], quiet: bool = False,
             backgrounds: list[str] | None = None, scorer: Scorer | None = None) -> list[dict[str, Any]]:
    sc = scorer or Scorer(root, backgrounds)
    rows = []
    import os

    quiet = quiet or os.environ.get("LINEAGE_DISABLE_PROGRESS_BARS", "0") == "1"
    for a, b, label, cat in tqdm(pairs, desc="pairs", unit="pair", disable=quiet):
        row: dict[str, Any] = {"a": a, "b": b, "label": label, "category": cat}
        for m in methods:
            t = time.perf_counter()
            row[m], row[f"{m}_verdict"] = sc.score(m, a, b)
            row[f"{m}_s"] = round(time.perf_counter() - t, 4)
        rows.append(row)
    return rows


def reuse_columns(rows: list[dict[str, Any]], path: Path, methods: list[str]) -> list[str]:
    """Copy the columns of methods not in ``methods`` from an earlier ``scores.csv`` into ``rows``
    (matched on the pair); returns every method to report, in the earlier file's order.

    Raises:
        SystemExit: the earlier file does not cover exactly the same pairs.
    """
    with open(path, newline="") as f:
        old = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    if set(old) != {(r["a"], r["b"]) for r in rows}:
        raise SystemExit(f"{path} scores other pairs than this run; re-score every method instead")
    header = list(next(iter(old.values())))
    kept = [c for c in header if f"{c}_verdict" in header and c not in methods]
    for r in rows:
        o = old[(r["a"], r["b"])]
        for m in kept:
            r[m], r[f"{m}_verdict"], r[f"{m}_s"] = float(o[m]) if o[m] else math.nan, o[f"{m}_verdict"], float(o[f"{m}_s"])
    order = [c for c in header if f"{c}_verdict" in header]
    return [m for m in order if m in methods or m in kept] + [m for m in methods if m not in order]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", type=Path, default=None, help="zoo directory with manifest.json (default: the built small zoo)")
    p.add_argument("--models", type=Path, default=None, help="directory of real checkpoints (with --pairs)")
    p.add_argument("--pairs", type=Path, default=None, help='file of "A B label [category]" lines, paths under --models')
    p.add_argument("--methods", nargs="+", default=["lineage", "second", "awm", "huref", "reef"],
                   help="methods to score; 'second' is lineage after the representation second opinion on the pairs "
                        "it leaves inconclusive or shared_init")
    p.add_argument("--backgrounds", nargs="*", default=None,
                   help="models (names under the zoo or --models) the second opinion is calibrated on, where the weights "
                        "call them independent of a side (default: the zoo's bases; none with --models)")
    p.add_argument("--negatives", choices=["all", "roots"], default="all")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--reuse", type=Path, default=None,
                   help="an earlier scores.csv of the same pairs: its other methods' columns are copied, not re-scored "
                        "(re-run one method after a change without the hour HuRef takes)")
    a = p.parse_args()
    t = time.perf_counter()
    if a.models:
        if not a.pairs:
            p.error("--models needs --pairs")
        pairs = read_pairs(a.pairs)
        root, title = a.models, f"{a.models} ({len(pairs)} pairs)"
    else:
        from zoo.build import default_dir

        root = a.zoo or default_dir("small")
        manifest = read_manifest(root)
        pairs = zoo_pairs(manifest, a.negatives)
        title = f"zoo {manifest.size}: {len(manifest)} models, {len(pairs)} pairs (negatives: {a.negatives})"
    backgrounds = a.backgrounds if a.backgrounds is not None else (
        [] if a.models else [m.name for m in read_manifest(root) if m.is_base])
    scorer = Scorer(root, backgrounds)
    rows = evaluate(root, pairs, a.methods, scorer=scorer)
    methods = list(a.methods)
    if a.reuse:
        methods = reuse_columns(rows, a.reuse, methods)
    out = a.out or RESULTS / (root.name if a.models else read_manifest(root).size)
    relations = None
    if not a.models and "lineage" in a.methods:
        from bench.relations import typed_per_category

        relations = typed_per_category(root)
    print(write_report(rows, methods, out, title, scorer.changes if "second" in a.methods else None, scorer.asked,
                       relations))
    by_method = defaultdict(float)
    for r in rows:
        for m in methods:
            by_method[m] += r[f"{m}_s"]
    print("seconds per method: " + ", ".join(f"{m} {v:.0f}" + ("" if m in a.methods else " (reused)") for m, v in by_method.items())
          + f"; total {time.perf_counter() - t:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
