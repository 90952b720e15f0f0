"""An evidence report a person can read, print and forward: one self-contained HTML file.

It shows the same facts as ``--json`` (the document is embedded verbatim as ``application/json`` and every
table is drawn from it): the verdict and the statistics behind it (per-layer CKA, the alignment's quality
against chance, the embedding correspondence), the relation with its rule, the aligned differences, their
low-rank spectrum and quantization signature, a merge's weights, and both fingerprint pictures.

Nothing is fetched: styles are inline, pictures are ``data:`` URIs, charts are inline SVG, and the page's
Content-Security-Policy forbids any other source. Every string from a model (paths, ids, card fields) is
escaped.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d232a;max-width:1000px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#57606a}.verdict{display:inline-block;padding:6px 12px;border-radius:6px;font-weight:600;margin:12px 0}
.derived{background:#ffebe9;color:#82071e}.independent{background:#dafbe1;color:#116329}
.inconclusive,.shared_init{background:#fff8c5;color:#7d4e00}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pics{display:flex;gap:24px;flex-wrap:wrap}.pics figure{margin:0}.pics img{width:192px;height:192px;image-rendering:pixelated}
code{background:#f6f8fa;padding:0 3px}svg{display:block;margin:6px 0}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}table,svg,figure{break-inside:avoid}}
"""


def _e(v: Any) -> str:
    return escape(str(v), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else _e("—" if v is None else v)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{_e(x)}</th>" for x in head)
    def cell(c: Any) -> str:
        if isinstance(c, float):
            return f"<td class=n>{_num(c)}</td>"
        return f"<td>{'—' if c is None else _e(c)}</td>"

    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def bars(values: list[float], labels: list[str], *, top: float = 1.0, line: float | None = None, height: int = 120) -> str:
    """An inline SVG bar chart (one bar per value, scaled to ``top``; ``line``: a dashed reference)."""
    n = max(1, len(values))
    w = min(40, max(8, 720 // n))
    width = n * w + 40
    out = [f'<svg width="{width}" height="{height + 30}" role="img">']
    for i, (v, lab) in enumerate(zip(values, labels)):
        h = max(0.0, min(1.0, v / top)) * height
        x = 30 + i * w
        out.append(f'<rect x="{x + 1}" y="{height - h:.1f}" width="{w - 2}" height="{h:.1f}" fill="#0969da">'
                   f"<title>{_e(lab)}: {v:.4f}</title></rect>")
        if n <= 24:
            out.append(f'<text x="{x + w / 2}" y="{height + 14}" font-size="10" text-anchor="middle">{_e(lab)}</text>')
    if line is not None:
        y = height - min(1.0, line / top) * height
        out.append(f'<line x1="30" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#cf222e" stroke-dasharray="4 3"/>')
    out.append(f'<text x="0" y="10" font-size="10">{top:.3g}</text><text x="0" y="{height}" font-size="10">0</text></svg>')
    return "".join(out)


def _compare(c: dict[str, Any]) -> str:
    out = ["<h2>Evidence from the weights</h2>"]
    rows = [["score", c["score"], f"thresholds: derived ≥ {c['thresholds']['min_derived_score']}, "
                                   f"independent ≤ {c['thresholds']['max_independent_score']}"],
            ["z", c["z"], f"against {c['background']} (null mean {c['null_mean']:.4f}, std {c['null_std']:.4f})"],
            ["residual alignment", c["alignment_quality"], f"{c['alignment']}; chance {c['alignment_chance']:.4f}"],
            ["embedding Procrustes fit", c["procrustes_fit"],
             f"chance (token-shuffled rows) {_num(c.get('procrustes_chance'))}"],
            ["shared tokens", int(c["shared_tokens"]), ""]]
    if c.get("embedding_share") is not None:
        rows.append(["embedding share", c["embedding_share"], "share of the evidence from the embeddings"])
    out.append(_table(["statistic", "value", "against"], rows))
    for n in c.get("notes") or []:
        out.append(f"<p class=sub>note: {_e(n)}</p>")
    layers = c.get("layers") or []
    if layers:
        out.append("<h2>Per-layer CKA (unbiased, after alignment)</h2>")
        out.append(bars([x["score"] for x in layers], [f"{x['layer_a']}:{x['layer_b']}" for x in layers],
                        line=c["thresholds"]["min_derived_score"]))
        out.append(_table(["layer A", "layer B", "CKA Q", "CKA K", "score"],
                          [[x["layer_a"], x["layer_b"], x["q"], x["k"], x["score"]] for x in layers]))
    return "".join(out)


def _relation(r: dict[str, Any]) -> str:
    out = [f"<h2>Relation: {_e(r['relation'])}</h2>"]
    if r.get("declared"):
        out.append("<p>Declared in the card (shown, not used): "
                   + "; ".join(f"<code>{_e(k)}</code> {_e(v)}" for k, v in r["declared"].items()) + "</p>")
    for p in r.get("pairs") or []:
        detail = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in p["detail"].items())
        out.append(f"<p>Against <code>{_e(p['parent'])}</code>: <b>{_e(p['relation'])}</b>"
                   + (f" ({_e(detail)})" if detail else "") + f". Rule: {_e(p['rule'])}. Median drift "
                   f"{p['drift']:.4f}; residual basis {_e(p['alignment'])}"
                   + (f"; flags: {_e('; '.join(p['flags']))}" if p["flags"] else "") + ".</p>")
        roles = p.get("roles") or []
        out.append(_table(["layer", "matrix", "δ", "measured on", "rank / side", "rms(Δ/step)", "child dtype"],
                          [[x["layer"], x["role"], x["delta"], x["via"],
                            f"{x['rank']} / {x['size']}" if x["rank"] is not None else "—",
                            x["quant_rms"], x["dtype"]] for x in roles]))
        spec = [x for x in roles if x.get("spectrum")]
        if spec:
            big = max(spec, key=lambda x: x["delta"])
            # log scale: float32 noise is so small that the spectrum spans many decades above its edge
            logs = [max(0.0, math.log10(max(v, 1e-12)) + 1.0) for v in big["spectrum"]]
            out.append(f"<p class=sub>Singular values of Δ (layer {big['layer']}, {_e(big['role'])}) in units of the "
                       "noise edge, log scale from 0.1; the dashed line is the edge. A merged adapter of rank r shows r "
                       "bars above it, a full update many, a quantized copy none.</p>")
            out.append(bars(logs, [str(i + 1) for i in range(len(logs))], top=max(2.0, max(logs)), line=1.0))
    rec = r.get("recipe")
    if rec:
        out.append(f"<h2>Merge recipe: {_e(rec['method'])}</h2>")
        out.append(_table(["parent", "weight"], [[p, w] for p, w in zip(r["parents"], rec["weights"])]))
        out.append(_table(["layer", *[f"weight {i + 1}" for i in range(len(rec["weights"]))]],
                          [[k, *v] for k, v in rec["per_layer"].items()]))
        out += [f"<p class=sub>{_e(k)}: {_e(v)}</p>" for k, v in rec["details"].items()]
        out += [f"<p class=sub>note: {_e(n)}</p>" for n in rec["notes"]]
    return "".join(out)


def render(doc: dict[str, Any], pictures: dict[str, bytes]) -> str:
    """The report of ``doc`` (``{"a", "b", "compare", "relation"}``, any part None) with PNG ``pictures``
    (label → bytes)."""
    c, r = doc.get("compare"), doc.get("relation")
    outcome = c["outcome"] if c else (r["relation"] if r else "")
    title = f"{doc.get('b') or ''} vs {doc.get('a') or ''}"
    head = (f"<h1>Lineage evidence</h1><p class=sub>{_e(title)}<br>generated "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by model-lineage, method version "
            f"{_e(doc.get('method_version', ''))}</p>")
    verdict = f'<div class="verdict {_e(outcome)}">{_e(str(outcome).upper())}</div>' if c else ""
    if c and r:
        verdict += f' <div class="verdict">relation: {_e(r["relation"])}</div>'
    body = [head, verdict, _compare(c) if c else "", _relation(r) if r else ""]
    if pictures:
        figs = "".join(f'<figure><img alt="{_e(k)}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
                       f"<figcaption>{_e(k)}</figcaption></figure>" for k, v in pictures.items())
        body.append(f"<h2>Fingerprint pictures</h2><div class=pics>{figs}</div>")
    facts = json.dumps(doc, sort_keys=True, default=str).replace("</", "<\\/")
    body.append(f'<script type="application/json" id="facts">{facts}</script>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write(path: str | Path, doc: dict[str, Any], pictures: dict[str, bytes]) -> Path:
    """Render and write atomically (a half-written report is never left)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(render(doc, pictures), "utf-8")
    tmp.replace(p)
    return p
