"""Accuracy, weighted F1, gate recall and latency per domain, and the mean over domains."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Iterable


def weighted_f1(gold: list[str], pred: list[str]) -> float:
    """F1 per gold label, weighted by the label's support (as scikit-learn's ``average='weighted'``)."""
    if not gold:
        return 0.0
    support = Counter(gold)
    predicted = Counter(pred)
    hits = Counter(g for g, p in zip(gold, pred) if g == p)
    total = 0.0
    for label, n in support.items():
        precision = hits[label] / predicted[label] if predicted[label] else 0.0
        recall = hits[label] / n
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += f1 * n
    return total / len(gold)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The results document: per domain figures and the unweighted means over domains."""
    by_domain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row)
    domains: dict[str, Any] = {}
    for name in sorted(by_domain):
        group = by_domain[name]
        gold = [r["gold"] for r in group]
        pred = [r["pred"] for r in group]
        latencies = [float(r["latency_ms"]) for r in group]
        domains[name] = {
            "cases": len(group),
            "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(group),
            "weighted_f1": weighted_f1(gold, pred),
            "gate_recall": sum(r["gold"] in r["allowed"] for r in group) / len(group),
            "mean_allowed": statistics.fmean(len(r["allowed"]) for r in group),
            "violations": sum(r["pred"] not in r["allowed"] for r in group),
            "model_calls": sum(bool(r.get("model_call")) for r in group),
            "median_latency_ms": percentile(latencies, 50),
            "p95_latency_ms": percentile(latencies, 95),
        }
    values = list(domains.values())
    return {
        "domains": domains,
        "cases": sum(d["cases"] for d in values),
        "mean_accuracy": statistics.fmean(d["accuracy"] for d in values) if values else 0.0,
        "mean_weighted_f1": statistics.fmean(d["weighted_f1"] for d in values) if values else 0.0,
        "mean_gate_recall": statistics.fmean(d["gate_recall"] for d in values) if values else 0.0,
        "violations": sum(d["violations"] for d in values),
    }


def format_table(summary: dict[str, Any]) -> str:
    """The per-domain table printed at the end of a run."""
    lines = [f"{'domain':<12}{'cases':>6}{'acc':>7}{'wF1':>7}{'gate':>7}{'|set|':>7}{'calls':>7}"
             f"{'p50 ms':>9}{'p95 ms':>9}{'viol':>6}"]
    for name, d in summary["domains"].items():
        lines.append(f"{name:<12}{d['cases']:>6}{d['accuracy']:>7.1%}{d['weighted_f1']:>7.1%}"
                     f"{d['gate_recall']:>7.1%}{d['mean_allowed']:>7.1f}{d['model_calls']:>7}"
                     f"{d['median_latency_ms']:>9.0f}{d['p95_latency_ms']:>9.0f}{d['violations']:>6}")
    lines.append(f"{'mean':<12}{summary['cases']:>6}{summary['mean_accuracy']:>7.1%}"
                 f"{summary['mean_weighted_f1']:>7.1%}{summary['mean_gate_recall']:>7.1%}")
    return "\n".join(lines)
