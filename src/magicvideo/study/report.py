"""`magicvideo study report`: what the votes say, as the paper reports it and as arenas do.

- Per pair of systems (A before B in the study's order) G / S / B, the votes where A was better,
  the same, or worse, and the paper's (G+S)/(B+S), with a 95% bootstrap interval over pairs;
  overall and per rater.
- A Bradley-Terry ranking with ties (Davidson 1970: P(tie) grows with nu * sqrt(p_i p_j)) of all
  systems, strengths normalised to mean log-strength 0, with 95% bootstrap intervals.
- Agreement: Cohen's kappa between every two raters on the pairs both voted.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict

import numpy as np
import torch

BOOTSTRAP = 1000


def load_votes(db: sqlite3.Connection, criterion: str = "overall") -> list[dict]:
    """One dict per vote: pair, rater, and the left and right systems' names and the choice."""
    rows = db.execute("""
        SELECT v.pair, r.name AS rater, r.kind, sl.name AS left, sr.name AS right, v.choice
        FROM votes v JOIN raters r ON r.id = v.rater JOIN pairs p ON p.id = v.pair
        JOIN videos vl ON vl.id = p.left_video JOIN videos vr ON vr.id = p.right_video
        JOIN systems sl ON sl.id = vl.system JOIN systems sr ON sr.id = vr.system
        WHERE v.criterion = ? ORDER BY v.id""", (criterion,)).fetchall()
    return [dict(r) for r in rows]


def outcome(vote: dict, a: str) -> str:
    """'G', 'S' or 'B' for system `a` in this vote."""
    if vote["choice"] == "same":
        return "S"
    return "G" if (vote["choice"] == "left") == (vote["left"] == a) else "B"


def ratio(g: int, s: int, b: int) -> float:
    return (g + s) / (b + s) if b + s else float("inf")


def gsb(votes: list[dict], a: str, rng: np.random.Generator) -> dict:
    """G, S, B for `a` over these votes, (G+S)/(B+S) and its interval (resampling pairs)."""
    marks = [outcome(v, a) for v in votes]
    g, s, b = (marks.count(k) for k in "GSB")
    by_pair = defaultdict(list)
    for v, m in zip(votes, marks):
        by_pair[v["pair"]].append(m)
    groups = list(by_pair.values())
    draws = []
    for _ in range(BOOTSTRAP):
        picked = [m for i in rng.integers(0, len(groups), len(groups)) for m in groups[i]]
        draws.append(ratio(*(picked.count(k) for k in "GSB")))
    # "nearest": a draw with no B and no S has an infinite ratio, which interpolation cannot take
    lo, hi = (np.percentile(np.array(draws), [2.5, 97.5], method="nearest") if len(groups) > 1
              else (float("nan"), float("nan")))
    return {"G": g, "S": s, "B": b, "ratio": ratio(g, s, b), "ci": [float(lo), float(hi)], "votes": len(votes)}


def bradley_terry(votes: list[dict], systems: list[str], steps: int = 300) -> tuple[np.ndarray, float]:
    """Davidson's Bradley-Terry with ties, by maximum likelihood: (log-strengths, nu)."""
    index = {s: i for i, s in enumerate(systems)}
    i = torch.tensor([index[v["left"]] for v in votes])
    j = torch.tensor([index[v["right"]] for v in votes])
    win = torch.tensor([v["choice"] == "left" for v in votes])
    tie = torch.tensor([v["choice"] == "same" for v in votes])
    theta = torch.zeros(len(systems), dtype=torch.float64, requires_grad=True)
    log_nu = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta, log_nu], max_iter=steps, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        a, b = theta[i], theta[j]
        t = log_nu + (a + b) / 2
        denom = torch.logsumexp(torch.stack([a, b, t]), 0)
        ll = torch.where(tie, t, torch.where(win, a, b)) - denom
        # a weak prior keeps a system that never loses (or never wins) finite
        loss = -ll.sum() + 0.01 * (theta**2).sum()
        loss.backward()
        return loss

    opt.step(nll)
    strengths = theta.detach().numpy()
    return strengths - strengths.mean(), float(log_nu.detach().exp())


def ranking(votes: list[dict], systems: list[str], rng: np.random.Generator) -> list[dict]:
    base, nu = bradley_terry(votes, systems)
    by_pair = defaultdict(list)
    for v in votes:
        by_pair[v["pair"]].append(v)
    groups = list(by_pair.values())
    boots = []
    for _ in range(200):
        picked = [v for k in rng.integers(0, len(groups), len(groups)) for v in groups[k]]
        boots.append(bradley_terry(picked, systems, steps=100)[0])
    lo, hi = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    order = np.argsort(-base)
    return [{"system": systems[k], "strength": float(base[k]), "ci": [float(lo[k]), float(hi[k])], "nu": nu}
            for k in order]


def kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two raters' choices on the same items."""
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    expected = sum((a.count(c) / n) * (b.count(c) / n) for c in ("left", "same", "right"))
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def agreement(votes: list[dict]) -> list[dict]:
    by_rater = defaultdict(dict)
    for v in votes:
        by_rater[v["rater"]][v["pair"]] = v["choice"]
    out = []
    for r1, r2 in itertools.combinations(sorted(by_rater), 2):
        common = sorted(set(by_rater[r1]) & set(by_rater[r2]))
        if len(common) >= 2:
            out.append({"raters": [r1, r2], "pairs": len(common),
                        "kappa": kappa([by_rater[r1][p] for p in common], [by_rater[r2][p] for p in common])})
    return out


def build_report(db: sqlite3.Connection, seed: int = 0) -> dict:
    systems = [r["name"] for r in db.execute("SELECT name FROM systems ORDER BY position")]
    votes = load_votes(db)
    rng = np.random.default_rng(seed)
    report = {"systems": systems, "votes": len(votes),
              "raters": sorted({v["rater"] for v in votes}), "comparisons": [], "ranking": [], "agreement": []}
    if not votes:
        return report
    for a, b in itertools.combinations(systems, 2):
        between = [v for v in votes if {v["left"], v["right"]} == {a, b}]
        if not between:
            continue
        entry = {"system": a, "versus": b, "overall": gsb(between, a, rng), "per_rater": {}}
        for rater in sorted({v["rater"] for v in between}):
            entry["per_rater"][rater] = gsb([v for v in between if v["rater"] == rater], a, rng)
        report["comparisons"].append(entry)
    report["ranking"] = ranking(votes, systems, rng)
    report["agreement"] = agreement(votes)
    return report


def markdown(report: dict) -> list[str]:
    lines = [f"{report['votes']} votes by {len(report['raters'])} rater(s) on {len(report['systems'])} systems.", "",
             "| system | versus | G | S | B | (G+S)/(B+S) | 95% interval |", "|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        o = c["overall"]
        lines.append(f"| {c['system']} | {c['versus']} | {o['G']} | {o['S']} | {o['B']} | {o['ratio']:.2f} | "
                     f"[{o['ci'][0]:.2f}, {o['ci'][1]:.2f}] |")
    if report["ranking"]:
        lines += ["", "Bradley-Terry (with ties) log-strength, mean 0:", "",
                  "| rank | system | strength | 95% interval |", "|---|---|---|---|"]
        for k, r in enumerate(report["ranking"], 1):
            lines.append(f"| {k} | {r['system']} | {r['strength']:+.2f} | [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] |")
    if report["agreement"]:
        lines += ["", "| raters | pairs both voted | Cohen's kappa |", "|---|---|---|"]
        lines += [f"| {' / '.join(a['raters'])} | {a['pairs']} | {a['kappa']:.2f} |" for a in report["agreement"]]
    return lines


def plot(report: dict, path: str) -> None:
    """The paper's Figure-2 style chart: a stacked bar of G / S / B shares per comparison."""
    from PIL import Image, ImageDraw

    rows = report["comparisons"]
    width, bar, pad, label = 900, 34, 14, 300
    image = Image.new("RGB", (width, pad * 3 + 20 + len(rows) * (bar + pad)), "white")
    draw = ImageDraw.Draw(image)
    colours = {"G": (46, 139, 87), "S": (170, 170, 170), "B": (200, 60, 60)}
    x = label
    for key, name in (("G", "G: first system better"), ("S", "S: the same"), ("B", "B: first system worse")):
        draw.rectangle([x, pad, x + 14, pad + 14], fill=colours[key])
        draw.text((x + 20, pad), name, fill="black")
        x += 170
    span = width - label - pad - 70
    draw.text((label + span + 8, pad), "(G+S)/(B+S)", fill="black")
    y = pad * 2 + 20
    for c in rows:
        o = c["overall"]
        total = max(o["G"] + o["S"] + o["B"], 1)
        draw.text((pad, y + bar // 3), f"{c['system']} vs {c['versus']}", fill="black")
        x = label
        for key in "GSB":
            w = round(span * o[key] / total)
            if w:
                draw.rectangle([x, y, x + w, y + bar], fill=colours[key])
                draw.text((x + 4, y + bar // 3), str(o[key]), fill="white")
            x += w
        draw.text((label + span + 8, y + bar // 3), f"{o['ratio']:.2f}", fill="black")
        y += bar + pad
    image.save(path)
