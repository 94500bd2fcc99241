"""The paper's four claims, and a verdict on each computed from the evaluations' numbers.

Pure Python over evaluation rows (dicts with method, layer, unit, metric, value), no torch, so
it can be tested on hand-made rows. A verdict is a score (1 supported, 0.5 partly, 0 not
supported, None not measurable with this store) and the numbers that decided it. Each claim is
split into two checks; both passing is "supported", one is "partly", none is "not supported".
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

CLAIMS = {
    "claim1": "Neurons are multifaceted, and MFV reveals their distinct facets",
    "claim2": "Neurons of higher layers are more multifaceted than those of lower layers",
    "claim3": "Starting from facet means gives more natural colours and global structure than starting from noise",
    "claim4": "Center-biased regularization gives one centred object instead of repeated fragments",
}
WORDS = {1.0: "supported", 0.5: "partly supported", 0.0: "not supported", None: "not measured"}

# Thresholds of the checks, stated once (docs/results.md quotes them).
DISTINCT_FACETS = 0.25       # claim 1: median facet_diversity at least this (a quarter of the exemplars' spread between facets)
OVER_NULL = 5.0              # ... and this many times the random-split baseline
OVER_CHANCE = 2.0            # claim 1: facet images nearest their own cluster at least twice as often as chance
TREND = 0.5                  # claim 2: |Spearman rho| of layer medians against depth that counts as a trend


@dataclass(frozen=True)
class Verdict:
    claim: str
    score: float | None
    evidence: str

    @property
    def word(self) -> str:
        return WORDS[self.score]


class Evidence:
    """Look-ups into one model's evaluation rows."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def value(self, method: str, metric: str, layer: str | None = None) -> float | None:
        """An aggregate: the run's (layer None) or one layer's value."""
        for row in self.rows:
            if (row["method"], row["metric"], row["layer"], row["unit"]) == (method, metric, layer, None):
                return row["value"]
        return None

    def per_unit(self, method: str, metric: str, layers=None) -> dict[tuple[str, int], float]:
        return {(r["layer"], r["unit"]): r["value"] for r in self.rows
                if r["method"] == method and r["metric"] == metric and r["unit"] is not None
                and r["value"] is not None and (layers is None or r["layer"] in layers)}


def _score(checks: list[bool]) -> float:
    return {2: 1.0, 1: 0.5, 0: 0.0}[sum(checks)]


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):   # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for pos in range(i, j + 1):
            ranks[order[pos]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (NaN for fewer than 3 points or a constant series)."""
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = mean(rx), mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var > 0 else float("nan")


def claim1(ev: Evidence) -> Verdict:
    diversity, null = ev.value("mfv", "facet_diversity"), ev.value("mfv", "diversity_null")
    hits, chance = ev.value("mfv", "facet_to_cluster"), ev.value("mfv", "facet_to_cluster_chance")
    if diversity is None or hits is None or chance is None:
        return Verdict("claim1", None, "needs an MFV run with exemplars (facet diversity and facet-to-cluster)")
    distinct = diversity >= DISTINCT_FACETS and diversity >= OVER_NULL * (null or 0.0)
    kept = hits >= OVER_CHANCE * chance
    return Verdict("claim1", _score([distinct, kept]),
                   f"median facet diversity {diversity:.2f} vs {null:.3f} for random splits "
                   f"({'passes' if distinct else 'fails'}: ≥ {DISTINCT_FACETS} and ≥ {OVER_NULL:g}× the baseline); "
                   f"{hits:.0%} of MFV facet images are nearest their own cluster's centroid vs {chance:.0%} by chance "
                   f"({'passes' if kept else 'fails'}: ≥ {OVER_CHANCE:g}× chance)")


def _trend(ev: Evidence, method: str, metric: str, layers: list[str]) -> tuple[float, str]:
    points = [(i, ev.value(method, metric, layer)) for i, layer in enumerate(layers)]
    points = [(i, v) for i, v in points if v is not None]
    rho = spearman([i for i, _ in points], [v for _, v in points])
    path = " → ".join(f"{layers[i]} {v:.2f}" for i, v in points)
    return rho, path


def claim2(ev: Evidence, layers: list[str]) -> Verdict:
    """`layers` in depth order (input to output)."""
    rho_f, path_f = _trend(ev, "mfv", "facet_diversity", layers)
    rho_i, path_i = _trend(ev, "mfv", "image_diversity", layers)
    if rho_f != rho_f or rho_i != rho_i:   # NaN: fewer than 3 layers measured
        return Verdict("claim2", None, "needs facet and image diversity on at least 3 layers")
    return Verdict("claim2", _score([rho_f >= TREND, rho_i >= TREND]),
                   f"median facet diversity {path_f} (Spearman ρ = {rho_f:+.2f} against depth); "
                   f"median image diversity of the MFV facets {path_i} (ρ = {rho_i:+.2f}); "
                   f"a rise needs ρ ≥ {TREND}")


def _paired(ev: Evidence, metric: str, better: str, worse: str, layers=None) -> tuple[float, float, float, int]:
    """(mean of `better`, mean of `worse`, share of neurons where `better` is lower, n) over shared neurons."""
    a, b = ev.per_unit(better, metric, layers), ev.per_unit(worse, metric, layers)
    shared = sorted(set(a) & set(b))
    if not shared:
        return float("nan"), float("nan"), float("nan"), 0
    wins = sum(a[key] < b[key] for key in shared) / len(shared)
    return mean(a[k] for k in shared), mean(b[k] for k in shared), wins, len(shared)


def claim3(ev: Evidence) -> Verdict:
    checks, parts = [], []
    for metric, what in (("hist_chi2", "intensity-histogram χ² to the exemplars"),
                         ("code_distance", "fc7-code distance to the exemplars' mean")):
        mfv, noise, wins, n = _paired(ev, metric, "mfv", "noise")
        if not n:
            return Verdict("claim3", None, "needs MFV and noise runs with exemplars")
        checks.append(mfv < noise and wins > 0.5)
        parts.append(f"{what}: MFV {mfv:.3f} vs noise {noise:.3f}, MFV nearer on {wins:.0%} of {n} neurons")
    return Verdict("claim3", _score(checks), "; ".join(parts) + " (lower is more like real images)")


def claim4(ev: Evidence, fc_layers: list[str]) -> Verdict:
    """On fully connected layers only: a conv unit sees just its receptive field around the centre,
    so every method centres it (the paper shows center-bias on class neurons)."""
    cb_share, noise_share, _, n = _paired(ev, "centre_share", "center-bias", "noise", fc_layers)
    cb_frag, noise_frag, _, _ = _paired(ev, "fragments", "center-bias", "noise", fc_layers)
    if not n:
        return Verdict("claim4", None, "needs center-bias and noise runs on fully connected layers")
    checks = [cb_share > noise_share, cb_frag < noise_frag]
    return Verdict("claim4", _score(checks),
                   f"on {n} fc neurons: share of the image's energy in the central quarter center-bias "
                   f"{cb_share:.2f} vs noise {noise_share:.2f} (0.25 = no preference); salient fragments "
                   f"center-bias {cb_frag:.2f} vs noise {noise_frag:.2f}")


def verdicts(rows: list[dict], layers: list[str], fc_layers: list[str]) -> list[Verdict]:
    """Every claim's verdict from one model's evaluation rows; `layers` in depth order."""
    ev = Evidence(rows)
    return [claim1(ev), claim2(ev, layers), claim3(ev), claim4(ev, fc_layers)]
