"""Tables, verdicts and result files of the paper notebooks and of the report stage.

A notebook collects its runs, tests each claim with kd.stats (`compare` for paired seeds,
`trend`, `check`; re-exported here), never by hand, and writes through a `Report`:

    rep = Report("dkd", P)                      # results/<profile>/dkd/
    rep.claim("dkd_beats_kd", "DKD beats KD", compare(dkd_top1, kd_top1), paper="76.32 vs 73.33")
    rep.table("pairs", df); rep.savefig(fig, "beta_sweep"); rep.write()

On writing, a Report corrects its claims' p-values with Holm's method, and marks every
verdict `not tested` on a smoke-test profile (params.yaml `smoke: true`), and every
statistical verdict `not tested` ("regime invalid") when the profile's positive control
(results/<profile>/testbed/metrics.json, claim `positive_control`) is missing or was not
reproduced: a regime in which KD does not beat CE cannot test finer claims.

Files: metrics.json (the numbers, the claims and their verdicts, with their statistics),
headline.json (the verdict counts, for `dvc metrics show`: one short row per notebook),
table.md (our mean +- std beside the paper's numbers, and the verdicts), figures/*.png.
Accuracy is the LAST epoch's top-1 on the test split unless a column says "best".
"""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from kd.io import atomic_write_text
from kd.params import ROOT, read_yaml
from kd.stats import VERDICTS, adjusted_verdict, any_better, check, compare, holm, trend, untested  # noqa: F401  (the notebooks' API)

PAPER_RESULTS = ROOT / "data" / "paper_results.yaml"
CONTROL_PAPER, CONTROL_KEY = "testbed", "positive_control"
RAN_ON = ("device", "device_name", "cpu_capability", "threads", "torch")  # what a run's digits depend on
STUDENT_COLUMNS = {"top1": "top-1 (last)", "best_top1": "top-1 (best)", "nll": "NLL", "ece": "ECE",
                   "agreement": "agreement", "kl_teacher": "KL(t||s)"}


def paper_results(paper: str | None = None) -> dict:
    """Paper-reported numbers from data/paper_results.yaml (each entry cites its source)."""
    data = read_yaml(PAPER_RESULTS)
    return data[paper] if paper else data


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (nan for one value) and count."""
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def fmt(values, digits: int = 2) -> str:
    """'71.23 ± 0.30' over seeds, or '71.23 (1 seed)'."""
    m, s, n = mean_std(values)
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def summaries(runs) -> pd.DataFrame:
    """One row per run: its configuration's key fields and its final summary."""
    rows = []
    for r in runs:
        s = dict(r.summary)
        s["run"] = r.path.name
        rows.append(s)
    return pd.DataFrame(rows)


def student_table(groups: dict, paper_column: dict | None = None, digits: int = 2) -> pd.DataFrame:
    """{row label: [Run per seed]} -> a table of mean ± std per metric (last epoch, plus best
    top-1), fidelity to the teacher where there is one, and an optional paper column."""
    rows = []
    for label, runs in groups.items():
        sums = [r.summary for r in runs]
        row = {"": label}
        for key, name in STUDENT_COLUMNS.items():
            vals = [s.get(key) for s in sums]
            row[name] = fmt(vals, digits) if any(v is not None for v in vals) else "–"
        if paper_column is not None:
            row["paper"] = paper_column.get(label, "–")
        rows.append(row)
    return pd.DataFrame(rows).set_index("")


def curves(groups: dict, keys=("train_loss", "top1")):
    """Per-epoch training curves (each run's metrics.csv) of {row label: [Run per seed]}: one
    panel per key, mean over seeds with the range of the seeds shaded. Test metrics are drawn at
    the epochs that evaluated them. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, runs in groups.items():
            frames = [r.history.set_index("epoch")[key].dropna() for r in runs if key in r.history]
            if not frames:
                continue
            table = pd.concat(frames, axis=1)
            line, = ax.plot(table.index, table.mean(1), label=label, lw=1.2)
            if table.shape[1] > 1:
                ax.fill_between(table.index, table.min(1), table.max(1), color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_figure(panels: dict[str, dict[str, list[float]]], title: str):
    """One panel per group of rows ({panel title: {row: [top-1 per seed]}}): bars of the mean ± std
    over seeds (the first row grey: the baseline) and, with several seeds, one line per seed (the pairs
    the verdicts compare). Long row names wrap."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, groups) in zip(axes[0], panels.items()):
        per_seed = np.array(list(groups.values()), dtype=float)
        ms = [mean_std(v) for v in per_seed]
        ax.bar(range(len(groups)), [m for m, _, _ in ms], yerr=[0 if np.isnan(sd) else sd for _, sd, _ in ms],
               capsize=4, color=["grey", *plt.rcParams["axes.prop_cycle"].by_key()["color"][:len(groups) - 1]])
        ax.set_xticks(range(len(groups)), [textwrap.fill(g, 16) for g in groups], fontsize=7)
        if per_seed.shape[1] > 1:
            for column in per_seed.T:
                ax.plot(range(len(groups)), column, color="k", lw=0.5, alpha=0.4, marker=".", ms=4)
        ax.set_ylim(per_seed.min() - 3, per_seed.max() + 1.5)
        ax.set_ylabel("test top-1 (%), last epoch")
        ax.set_title(name, fontsize=8)
    title += "; bars: mean ± std, lines: one seed" if per_seed.shape[1] > 1 else ""
    fig.suptitle(textwrap.fill(title, 80 * len(panels)), fontsize=9)
    fig.tight_layout()
    return fig


def values(runs, key: str = "top1") -> list[float]:
    return [r.summary[key] for r in runs]


def by_seed(runs, key: str = "top1") -> dict[int, float]:
    """{seed: the run's summary[key]}: one side of a comparison paired by seed (`compare` aligns two
    such dicts by their keys; runs distilled through different teachers pair by their own seed)."""
    out = {int(r.config.seed): float(r.summary[key]) for r in runs}
    if len(out) != len(runs):
        raise ValueError("two runs with the same seed on one side of a paired comparison")
    return out


def sweep_frame(groups: dict, column: str, keys=("top1",)) -> pd.DataFrame:
    """A sweep's rows 'name=value' -> one row per run: the swept value (as `column`), the seed and
    the run's metrics `keys`: the seed-level points of `trend`."""
    rows = []
    for name, runs in groups.items():
        v = float(name.split("=", 1)[1])
        rows += [{column: v, "seed": r.config.seed, **{k: r.summary[k] for k in keys}} for r in runs]
    return pd.DataFrame(rows)


def sweep_by_seed(frame: pd.DataFrame, column: str, value: float, key: str = "top1") -> dict[int, float]:
    """{seed: metric} of one setting (`column` == value) of a `sweep_frame`."""
    rows = frame[frame[column] == value]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[key])}


def teacher_spread(top1: dict, bound: float) -> dict:
    """The precondition of a stronger-teacher claim (`Report.claim(requires=...)`): the teachers
    the claim compares, {name: test top-1}, span at least `bound` points (params.yaml
    `testbed.ladder_spread`), so that "stronger" means something. A kd.stats `check`."""
    weakest, strongest = min(top1, key=top1.get), max(top1, key=top1.get)
    return check(top1[strongest] - top1[weakest], float(bound), what=f"{strongest} - {weakest} top-1",
                 at_least=True)


class Report:
    """Collects one paper's claims, tables, numbers and figures, and puts them in place only at
    the end (`write`): figures wait in `.staging/` until then, so a notebook that fails or is
    killed half-way leaves the previous results as they were."""

    def __init__(self, paper: str, profile):
        self.paper, self.profile = paper, profile
        self.dir = profile.results_dir(paper)
        self.staging = self.dir / ".staging"
        shutil.rmtree(self.staging, ignore_errors=True)  # a killed run's leftovers
        self.claims: list[dict] = []
        self.tables: list[tuple[str, pd.DataFrame]] = []
        self.numbers: dict = {}
        self.notes: list[str] = []
        self.where: dict[str, tuple] = {}  # run folder -> where it trained (RAN_ON of its provenance)

    def claim(self, key: str, text: str, result: dict, paper: str = "", ours: str = "",
              requires: str | dict | None = None) -> dict:
        """Record a claim; `result` comes from kd.stats (`compare`, `trend` or `check`).
        `paper` is the paper's number or statement (data/paper_results.yaml), `ours` ours.
        `requires`: what must hold for this claim to be tested at all, else its verdict is
        `not tested`: a testbed claim's key (e.g. "positive_control"), reproduced on this
        profile, or a `check` of this notebook's own that passed (e.g. `teacher_spread`)."""
        if result["verdict"] not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {result['verdict']!r}")
        entry = {"key": key, "claim": text, "paper": paper, "ours": ours, **result}
        if isinstance(requires, dict):
            if requires.get("claim_kind") != "check":
                raise ValueError("`requires` takes a testbed claim's key or a kd.stats.check result")
            entry["precondition"] = {k: requires[k] for k in ("verdict", "test", "evidence")}
        elif requires:
            entry["requires"] = requires
        self.claims = [c for c in self.claims if c["key"] != key] + [entry]
        return entry

    def table(self, title: str, df: pd.DataFrame) -> pd.DataFrame:
        self.tables = [(t, d) for t, d in self.tables if t != title] + [(title, df)]
        return df

    def number(self, key: str, value) -> None:
        """A number for metrics.json (nested keys with '/')."""
        node = self.numbers
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = float(value) if value is not None else None

    def note(self, text: str) -> None:
        self.notes.append(text)

    def ran(self, runs) -> None:
        """Record where these runs trained (their final.json `provenance`): metrics.json and
        table.md say it, since a CPU run's digits depend on it (README, "Reproducibility")."""
        for r in runs:
            where = r.summary.get("provenance", {})
            self.where[str(r.path)] = tuple(where.get(k) for k in RAN_ON)

    def ran_on(self) -> list[dict]:
        """The distinct places this paper's runs trained, each with its number of runs."""
        counts = Counter(self.where.values())
        return [{**dict(zip(RAN_ON, k)), "runs": n} for k, n in sorted(counts.items(), key=lambda kv: -kv[1])]

    def savefig(self, fig, name: str) -> Path:
        import matplotlib.pyplot as plt

        path = self.staging / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return path

    def _testbed_verdicts(self) -> dict[str, str]:
        path = self.profile.results_dir(CONTROL_PAPER) / "metrics.json"
        if not path.exists():
            return {}
        return {c["key"]: c["verdict"] for c in json.loads(path.read_text()).get("claims", [])}

    def regime(self) -> tuple[bool, str]:
        """(valid, why): may this profile's statistical verdicts be trusted? Not on a smoke-test
        profile; not where the positive control (the testbed's KD beats CE) failed or is missing."""
        if getattr(self.profile, "smoke", False):
            return False, f"smoke-test profile `{self.profile.name}`: runs too small to test any claim"
        if self.paper == CONTROL_PAPER:
            return True, ""
        path = self.profile.results_dir(CONTROL_PAPER) / "metrics.json"
        if not path.exists():
            return False, (f"regime invalid: no positive control on profile `{self.profile.name}` "
                           "(run the testbed stage)")
        got = self._testbed_verdicts().get(CONTROL_KEY, "missing")
        if got != "reproduced":
            return False, f"regime invalid: the positive control (KD beats CE) is {got} on `{self.profile.name}`"
        return True, ""

    def regime_text(self) -> str:
        """One line for a notebook: did this profile's positive control hold?"""
        valid, why = self.regime()
        return (f"profile `{self.profile.name}`: the positive control (testbed: KD beats CE) was reproduced; "
                "verdicts below are tested" if valid else f"Verdicts are `not tested`: {why}.")

    def finalise(self) -> list[dict]:
        """Holm's correction over this paper's tested claims, then the regime's gate (see the
        module doc). Returns the claims as written; the raw verdicts are kept as `verdict_raw`."""
        valid, why = self.regime()
        testbed = self._testbed_verdicts() if any(c.get("requires") for c in self.claims) else {}
        unmet = {}  # claims whose precondition (testbed or own) failed: not tested, and not in Holm's family
        for c in self.claims:
            need, pre = c.get("requires"), c.get("precondition")
            if need and testbed.get(need) != "reproduced":
                unmet[c["key"]] = (f"needs the testbed's `{need}` reproduced on `{self.profile.name}`; "
                                   f"it is {testbed.get(need, 'missing')}")
            elif pre and pre["verdict"] != "reproduced":
                unmet[c["key"]] = f"its precondition failed: {pre['evidence']}"
        tested = [c["verdict"] != "not tested" and c["key"] not in unmet for c in self.claims]
        p_holm = holm([c.get("p") if t else None for c, t in zip(self.claims, tested)])
        out = []
        for c, p_adj, t in zip(self.claims, p_holm, tested):
            c = dict(c, verdict_raw=c["verdict"], p_holm=p_adj if t else None)
            c["verdict"] = adjusted_verdict(c, c["p_holm"])
            c.setdefault("reason", "")
            if c["key"] in unmet:
                c["verdict"], c["reason"] = "not tested", unmet[c["key"]]
            elif c["verdict_raw"] == "not tested":
                c["reason"] = c["reason"] or "too few seeds or levels (see evidence)"
            elif not valid and (why.startswith("smoke") or c.get("claim_kind") != "check"):
                c["verdict"], c["reason"] = "not tested", why
            out.append(c)
        return out

    def claims_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"claim": c["claim"], "paper": c["paper"], "ours": c["ours"],
                              "verdict": c["verdict"], "evidence": c["evidence"] +
                              (f"; Holm p={c['p_holm']:.3g}" if c.get("p_holm") is not None else "") +
                              (f"; {c['reason']}" if c.get("reason") and c["verdict_raw"] != "not tested" else "")}
                             for c in self.finalise()])

    def write(self) -> None:
        claims = self.finalise()
        metrics = {"paper": self.paper, "profile": self.profile.name, "seeds": self.profile.seeds,
                   "accuracy": "last epoch, test split", "regime": dict(zip(("valid", "why"), self.regime())),
                   "numbers": self.numbers, "ran_on": self.ran_on(),
                   "verdicts": {c["key"]: c["verdict"] for c in claims},
                   "claims": [_jsonable(c) for c in claims]}
        atomic_write_text(self.dir / "metrics.json", json.dumps(metrics, indent=2))
        atomic_write_text(self.dir / "headline.json", json.dumps(headline(metrics), indent=2))
        lines = [f"# {self.paper}: profile `{self.profile.name}`", "",
                 f"Seeds: {self.profile.seeds}. Accuracy: last epoch on the test split (mean ± std over "
                 "seeds); 'best' columns are the best epoch. Paper numbers: data/paper_results.yaml. "
                 "Verdicts: kd.stats (paired seeds, 95% CI, Holm's correction across this paper's claims).", ""]
        if self.where:
            lines += ["Trained on: " + "; ".join(map(_where_text, self.ran_on())) + ".", ""]
        valid, why = self.regime()
        if not valid:
            lines += [f"**Verdicts not tested here: {why}.**", ""]
        if self.claims:
            lines += ["## Verdicts", "", self.claims_frame().to_markdown(index=False), ""]
        for title, df in self.tables:
            lines += [f"## {title}", "", df.to_markdown(), ""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        atomic_write_text(self.dir / "table.md", "\n".join(lines))
        staged = {p.name: p for p in (self.staging / "figures").glob("*.png")}
        for old in (self.dir / "figures").glob("*.png"):  # a figure this run did not draw (a design that no
            if old.name not in staged:                     # longer runs its rows) is not left beside its results
                old.unlink()
        for name, path in sorted(staged.items()):  # the figures, now that all is done
            path.replace(self.dir / "figures" / name)
        shutil.rmtree(self.staging, ignore_errors=True)


def headline(metrics: dict) -> dict:
    """A notebook's verdicts counted (the same keys for every notebook, so `dvc metrics show`
    is one short row per notebook; metrics.json and table.md hold each claim)."""
    verdicts = [c["verdict"] for c in metrics.get("claims", [])]
    return {"claims": len(verdicts), **{v: verdicts.count(v) for v in VERDICTS},
            "regime_valid": bool(metrics.get("regime", {}).get("valid", False))}


def _where_text(w: dict) -> str:
    """One place runs trained, for table.md: "AMD EPYC, AVX2 kernels, threads 1, torch 2.14.1: 51 runs"."""
    cpu = "" if str(w["device"]).startswith("cuda") else \
        f", {w['cpu_capability'] or 'unrecorded'} kernels, threads {w['threads']}"
    return f"{w['device_name']}{cpu}, torch {w['torch']}: {w['runs']} run{'s' * (w['runs'] != 1)}"


def _jsonable(value):
    """NaN -> None, numpy scalars -> Python numbers, recursively (metrics.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_report(profile_name: str, results_root: Path | None = None) -> Path:
    """results/<profile>/README.md: every paper's claims and verdicts in one table, and a
    summary figure of the verdict counts per paper."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = Path(results_root or os.environ.get("KD_RESULTS", ROOT / "results")) / profile_name
    rows = []
    for path in sorted(base.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        for c in m.get("claims", []):
            rows.append({"paper": m["paper"], "claim": c["claim"], "paper's number": c.get("paper", ""),
                         "ours": c.get("ours", ""), "evidence": c.get("evidence", "") + (
                             f"; Holm p={c['p_holm']:.3g}" if c.get("p_holm") is not None else ""),
                         "verdict": c["verdict"] + (f" ({c['reason']})" if c.get("reason") else "")})
    df = pd.DataFrame(rows, columns=["paper", "claim", "paper's number", "ours", "evidence", "verdict"])
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(df["paper"].unique()), 1) + 1.5))
    if len(df):
        counts = pd.crosstab(df["paper"], df["verdict"].str.split(" [(]").str[0]).reindex(
            columns=list(VERDICTS), fill_value=0)
        counts.plot.barh(stacked=True, ax=ax, color=["#2a9d8f", "#e9c46a", "#e76f51", "#bbbbbb"])
    ax.set_xlabel("claims")
    ax.set_title(f"Verdicts per paper, profile {profile_name}")
    fig_path = base / "summary.png"
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / "summary.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(fig_path)
    plt.close(fig)
    text = [f"# Results: profile `{profile_name}`", "",
            "Every row is a claim of a paper, its number as reported (data/paper_results.yaml), ours "
            "(last-epoch test top-1 or the metric named, mean ± std over seeds), the test's evidence "
            "(difference, 95% CI, n, test, p before and after Holm's correction) and the verdict "
            "(kd.stats). Each paper's details: `<paper>/table.md` and the executed notebook.", "",
            df.to_markdown(index=False) if len(df) else "(no paper results yet)",
            "", "![verdicts](summary.png)", ""]
    out = base / "README.md"
    atomic_write_text(out, "\n".join(text))
    return out


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(profile_name: str, readme: Path = ROOT / "README.md", results_root: Path | None = None) -> None:
    """Put results/<profile>/README.md's table between the results markers of the README."""
    import os

    base = Path(results_root or os.environ.get("KD_RESULTS", ROOT / "results")) / profile_name
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    table = (base / "README.md").read_text().split("\n", 2)[2].replace("](summary.png)",
                                                                       f"](results/{profile_name}/summary.png)")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    generated = f"_Generated by `python -m kd report --profile {profile_name} --readme`._"
    block = f"{README_START}\n{generated}\n{table}\n{README_END}"
    atomic_write_text(readme, head + block + tail)
