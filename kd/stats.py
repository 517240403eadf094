"""The statistical protocol every verdict goes through.

Paired seeds. One seed fixes a run's initialisation, its data subset (class-balanced, drawn
from the seed) and its batch order and augmentation, whatever the method; so two methods run
with the same seeds form pairs, and a comparison uses the per-seed differences d_i = a_i - b_i
(paired t on the differences). Runs of one profile share their teacher when the profile sets
`teacher_seed`; the inference is then about students of that teacher.

Every result is a dict with: `verdict`, `test`, `n`, `difference` (mean a - b, in the
metric's units), `ci` (its 95% confidence interval), `p` (the p-value the verdict rests on,
before Holm's correction), `p_support` / `p_contra` (the tests for and against the claim) and
`evidence` (one line for tables). Verdicts:

- `reproduced`: the 95% CI lies where the claim says (above 0 for "a beats b", inside
  (-margin, margin) for "no effect", ...);
- `contradicted`: it lies where the claim says it cannot;
- `inconclusive`: neither;
- `not tested`: fewer than MIN_SEEDS pairs (or, set by kd.report.Report, a smoke-test profile,
  a regime whose positive control failed, or a claim whose precondition failed; `untested`
  when its trainings were not run for that reason).

Claims (`compare(..., claim=)`), all on d = a - b (sign flipped when lower is better):
better (d > margin; against: d < 0), not_worse (d > -margin; against: d < -margin),
not_better (d < margin; against: d > margin), equivalent (TOST: -margin < d < margin;
against: |d| > margin). Each side is a one-sided paired t-test at alpha / 2, so that a
verdict agrees with the two-sided 95% CI. Trends (`trend`) are tested by an exact (or
Monte Carlo) permutation test of Spearman's rho, permuting within seeds; "one of several beats a
reference" (`any_better`) by Holm over the candidates. Identities and other
deterministic checks (`check`) are pass/fail against a tolerance, never t-tests. `holm`
corrects one paper's p-values for the number of its claims.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

ALPHA = 0.05
MIN_SEEDS = 3          # fewer pairs: `not tested`
MIN_TREND_LEVELS = 4   # a trend needs this many levels ...
MIN_TREND_SEEDS = 2    # ... with this many seeds each
VERDICTS = ("reproduced", "inconclusive", "contradicted", "not tested")
CLAIMS = ("better", "not_worse", "not_better", "equivalent")


def _as_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two per-seed sequences (same seed order) or {seed: value} dicts -> aligned arrays."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            raise TypeError("give both sides as {seed: value} dicts, or both as sequences in seed order")
        if set(a) != set(b):
            raise ValueError(f"paired comparison needs the same seeds on both sides, got {sorted(a)} and {sorted(b)}")
        seeds = sorted(a)
        a, b = [a[s] for s in seeds], [b[s] for s in seeds]
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired comparison needs one value per seed on each side, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired comparison got a missing or non-finite value")
    return a, b


def _p_mean_beyond(d: np.ndarray, threshold: float, above: bool) -> float:
    """One-sided paired t-test p-value for H1: mean(d) > threshold (above) or < threshold.
    Differences without spread (a deterministic quantity): 0 if the mean is on H1's side, else 1."""
    from scipy import stats

    m, n = float(d.mean()), len(d)
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0 if (m > threshold if above else m < threshold) else 1.0
    t = (m - threshold) / (sd / math.sqrt(n))
    return float(stats.t.sf(t, n - 1) if above else stats.t.cdf(t, n - 1))


def mean_ci(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t confidence interval of the mean of d (degenerate when d has no spread)."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return (float(d.mean() - half), float(d.mean() + half))


def _verdict(n: int, p_support: float, p_contra: float, alpha: float, min_n: int = MIN_SEEDS) -> str:
    if n < min_n or math.isnan(p_support):
        return "not tested"
    if p_support < alpha:
        return "reproduced"
    if p_contra < alpha:
        return "contradicted"
    return "inconclusive"


def compare(a, b, *, claim: str = "better", higher_is_better: bool = True, margin: float = 0.0,
            alpha: float = ALPHA) -> dict:
    """Verdict for a claim about a against b from paired per-seed values (see the module doc).

    a, b: one value per seed, in the same seed order (or {seed: value} dicts). `margin`, in
    the metric's units, is the smallest gain that counts for `better` and the equivalence
    margin of the other claims (from params.yaml, never fitted to the data).
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {CLAIMS}, got {claim!r}")
    if margin < 0 or (claim != "better" and margin <= 0):
        raise ValueError(f"claim {claim!r} needs a positive margin, got {margin}")
    a, b = _as_pairs(a, b)
    sign = 1.0 if higher_is_better else -1.0
    d = sign * (a - b)  # positive: a is better
    n = len(d)
    two = lambda p: min(1.0, 2 * p) if not math.isnan(p) else p  # noqa: E731  (alpha/2 per side)
    if claim == "better":
        p_support, p_contra = two(_p_mean_beyond(d, margin, True)), two(_p_mean_beyond(d, 0.0, False))
        test = "paired t" + (f", gain > {margin:g}" if margin else "")
    elif claim == "not_worse":
        p_support, p_contra = two(_p_mean_beyond(d, -margin, True)), two(_p_mean_beyond(d, -margin, False))
        test = f"paired t, non-inferiority (margin {margin:g})"
    elif claim == "not_better":
        p_support, p_contra = two(_p_mean_beyond(d, margin, False)), two(_p_mean_beyond(d, margin, True))
        test = f"paired t, non-superiority (margin {margin:g})"
    else:
        p_support = max(two(_p_mean_beyond(d, -margin, True)), two(_p_mean_beyond(d, margin, False)))
        p_contra = min(two(_p_mean_beyond(d, margin, True)), two(_p_mean_beyond(d, -margin, False)))
        test = f"paired TOST (margin {margin:g})"
    diff = float((a - b).mean())
    lo, hi = mean_ci(a - b)
    p = min(p_support, p_contra) if not math.isnan(p_support) else math.nan
    verdict = _verdict(n, p_support, p_contra, alpha)
    evidence = f"difference {diff:+.3g}"
    evidence += f", 95% CI [{lo:+.3g}, {hi:+.3g}], n={n}, {test}, p={p:.3g}" if n > 1 else f", n={n}"
    if n < MIN_SEEDS:
        evidence += f" (fewer than {MIN_SEEDS} seeds: not tested)"
    return {"verdict": verdict, "test": test, "n": n, "difference": diff, "ci": [lo, hi], "p": p,
            "p_support": p_support, "p_contra": p_contra, "claim_kind": claim, "evidence": evidence}


def any_better(candidates: dict, reference, *, margin: float, alpha: float = ALPHA) -> dict:
    """Verdict for "some candidate beats the reference" ("the most accurate teacher is not the best
    teacher") from paired per-seed values: {name: values} against the reference's values.

    For: each candidate `compare(claim="better")` with the reference, Holm over the candidates,
    the smallest adjusted p (a union of tests). Against: the reference is not worse than any
    candidate by more than `margin` (`compare(claim="not_worse")` of the reference with each, an
    intersection-union test: the largest p, no correction). The difference and CI are the
    candidate with the strongest support's, minus the reference (`best` names it).
    """
    if not candidates:
        raise ValueError("any_better needs at least one candidate")
    ups = {k: compare(v, reference) for k, v in candidates.items()}
    names = list(ups)
    adjusted = holm([ups[k]["p_support"] for k in names])
    i = min(range(len(names)), key=lambda j: (math.inf if math.isnan(adjusted[j]) else adjusted[j], j))
    best = ups[names[i]]
    holds = [compare(reference, v, claim="not_worse", margin=margin) for v in candidates.values()]
    p_support, p_contra = adjusted[i], max(h["p_support"] for h in holds)
    n = best["n"]
    verdict = _verdict(n, p_support, p_contra, alpha)
    test = (f"paired t of each of {len(names)} against the reference, Holm (for); the reference "
            f"not worse than each by {margin:g}, intersection-union (against)")
    p = min(p_support, p_contra) if not math.isnan(p_support) else math.nan
    evidence = (f"best {names[i]}: {best['evidence'].split(', paired')[0]}; {test}; p for {p_support:.3g}, "
                f"against {p_contra:.3g}" if n > 1 else best["evidence"])
    return {"verdict": verdict, "test": test, "n": n, "difference": best["difference"], "ci": best["ci"],
            "p": p, "p_support": p_support, "p_contra": p_contra, "claim_kind": "any_better", "best": names[i],
            "evidence": evidence}


def _standard_ranks(v: np.ndarray) -> np.ndarray | None:
    """Average ranks (ties share their mean rank), centred and scaled to unit norm; None for a
    constant series. Spearman's rho of x and y is the dot product of theirs."""
    from scipy import stats

    if np.ptp(v) == 0:
        return None
    r = stats.rankdata(v)
    r = r - r.mean()
    return r / np.linalg.norm(r)


def _block_permutations(blocks: list[np.ndarray], limit: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Orderings of the points that permute within each block: all of them (exact) if there
    are at most `limit`, else `limit` random ones. Returns (index array [k, n], exact)."""
    total = math.prod(math.factorial(len(b)) for b in blocks)
    if total <= limit:
        per_block = [np.array(list(itertools.permutations(b))) for b in blocks]
        combos = itertools.product(*[range(len(p)) for p in per_block])
        return np.array([np.concatenate([p[i] for p, i in zip(per_block, c)]) for c in combos]), True
    return np.array([np.concatenate([rng.permutation(b) for b in blocks]) for _ in range(limit)]), False


def trend(x, y, seeds=None, *, increasing: bool = True, alpha: float = ALPHA, permutations: int = 20000) -> dict:
    """Verdict for "y increases (or decreases) with x" from seed-level points.

    Statistic: Spearman's rho over all points. p-value: a permutation test that reshuffles y
    across the levels within each seed (seeds=None: across all points), exact when there
    are at most `permutations` orderings, else Monte Carlo with that many draws (fixed
    generator). `not tested` below MIN_TREND_LEVELS levels or MIN_TREND_SEEDS seeds per level.
    Also the least-squares slope of y on x with its 95% CI (`slope`, `slope_ci`).
    """
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"trend needs one x per y, got {x.shape} and {y.shape}")
    seeds = np.zeros(len(x), int) if seeds is None else np.asarray(seeds)
    blocks = [np.flatnonzero(seeds == s) for s in np.unique(seeds)]
    levels, per_level = np.unique(x, return_counts=True)
    sign = 1.0 if increasing else -1.0
    rx, ry = _standard_ranks(x), _standard_ranks(y)
    order = np.concatenate(blocks)
    perms, exact = _block_permutations(blocks, permutations, np.random.default_rng(0))
    if rx is None or ry is None:  # a constant series has no order: every ordering ties
        rho, null = 0.0, np.zeros(len(perms))
    else:
        rho = float(rx @ ry)
        null = ry[perms] @ rx[order]
    observed = sign * rho
    ge = int(np.sum(sign * null >= observed - 1e-12))
    le = int(np.sum(sign * null <= observed + 1e-12))
    if exact:
        p_one, p_other = ge / len(null), le / len(null)
    else:
        p_one, p_other = (1 + ge) / (1 + len(null)), (1 + le) / (1 + len(null))
    p_support, p_contra = min(1.0, 2 * p_one), min(1.0, 2 * p_other)
    testable = len(levels) >= MIN_TREND_LEVELS and per_level.min() >= MIN_TREND_SEEDS
    verdict = _verdict(len(x), p_support, p_contra, alpha) if testable else "not tested"
    slope, slope_ci = math.nan, [math.nan, math.nan]
    if len(levels) > 1 and len(x) > 2:
        fit = stats.linregress(x, y)
        half = float(stats.t.ppf(0.975, len(x) - 2) * fit.stderr)
        slope, slope_ci = float(fit.slope), [float(fit.slope - half), float(fit.slope + half)]
    test = f"{'exact' if exact else 'Monte Carlo'} permutation test of Spearman rho" + (
        " within seeds" if len(blocks) > 1 else "")
    evidence = (f"Spearman rho {rho:+.2f} over {len(x)} points ({len(levels)} levels, "
                f"{per_level.min()}-{per_level.max()} per level), {test}, one-sided p={p_one:.3g}")
    if not testable:
        evidence += (f" (fewer than {MIN_TREND_LEVELS} levels with {MIN_TREND_SEEDS} seeds each: not tested)")
    return {"verdict": verdict, "test": test, "n": len(x), "difference": rho, "ci": None,
            "p": min(p_support, p_contra), "p_support": p_support, "p_contra": p_contra,
            "p_one_sided": p_one, "slope": slope, "slope_ci": slope_ci, "claim_kind": "trend",
            "evidence": evidence}


def check(value: float, bound: float, *, what: str = "|error|", at_least: bool = False) -> dict:
    """A deterministic check (an identity, a bound): `reproduced` if value <= bound (or
    value >= bound with at_least), else `contradicted`. No p-value: nothing random is tested."""
    value = float(value)
    ok = value >= bound if at_least else value <= bound
    op = (">=" if ok else "<") if at_least else ("<=" if ok else ">")
    return {"verdict": "reproduced" if ok else "contradicted",
            "test": f"check: {what} {'>=' if at_least else '<='} {bound:g}", "n": 1, "difference": value,
            "ci": None, "p": None, "claim_kind": "check", "evidence": f"{what} = {value:.3g} {op} {bound:g}"}


def untested(why: str) -> dict:
    """A claim whose trainings were not run, on purpose (`why`: e.g. a precondition that the
    teachers, trained first, failed): `not tested`, with no statistics."""
    return {"verdict": "not tested", "test": "none", "n": 0, "difference": None, "ci": None, "p": None,
            "claim_kind": "untested", "evidence": why}


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (same order; None / nan stay as they are)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    adjusted = list(pvalues)
    m, running = len(idx), 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def adjusted_verdict(result: dict, p_adjusted: float, alpha: float = ALPHA) -> str:
    """The verdict of `result` once its p-value is corrected (Holm): a test that no longer
    passes at alpha becomes `inconclusive`; `not tested` and checks stay as they are."""
    if result["verdict"] in ("not tested",) or result.get("claim_kind") == "check" or p_adjusted is None:
        return result["verdict"]
    if p_adjusted >= alpha:
        return "inconclusive"
    return "reproduced" if result["p_support"] <= result["p_contra"] else "contradicted"


def power_paired(sd: float, effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level alpha to detect a mean difference `effect`
    with per-seed differences of standard deviation `sd` over n seeds (noncentral t)."""
    from scipy import stats

    if n < 2 or sd <= 0:
        return math.nan
    df, nc = n - 1, effect / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
