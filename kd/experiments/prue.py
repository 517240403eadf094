"""PrUE: Distilling Knowledge from Sparse Teacher Networks (Wang et al., ECML-PKDD 2022, arXiv
2207.00586): the trainings of notebooks/prue.ipynb and its analysis helpers. The paper's facts:
docs/papers.md, PrUE.

Every training the notebook needs (params.yaml section `prue`, resolved for a profile):
- teachers, one per teacher seed: the params.yaml teacher (dense); pruned one-shot from it at each
  sparsity of `sparsities` by the PrUE score, and at `compare_sparsity` by magnitude, each then
  fine-tuned from the dense weights with the teacher's recipe (`fine_tune_fraction` of its epochs)
  with the pruned weights held at zero (kd.prune; the convolutions only, as the official code);
- main, every seed, on the pair's student: alone (CE), KD (the official 0.9 CE + 0.1 T^2 KL, T 4)
  from the dense teacher, from each PrUE teacher and from the magnitude teacher, and from the dense
  teacher at each temperature of `match_temperatures` (claim 3: the notebook compares PrUE with the
  dense teacher at the temperature whose output entropy is closest to the PrUE teacher's at T).
Identical configurations are one run (the cache is keyed by the configuration's hash).
"""
from __future__ import annotations

from kd.experiments import output_entropy, pair_label as label, teacher_frame  # noqa: F401  (E.* in the notebook)
from kd.train import TrainConfig

# The keys of params.yaml's prue section; any other key there or in a notebook's overrides is an error
SECTION_KEYS = ("margin", "pair", "kd", "layers", "sparsities", "compare_sparsity", "match_temperatures",
                "fine_tune_fraction")


def kd_args(sec: dict, temperature: float | None = None) -> dict:
    """KD as the official code: 0.9 CE + 0.1 T^2 KL, T 4 (docs/papers.md, PrUE)."""
    args = {k: float(v) for k, v in sec["kd"].items()}
    if temperature is not None:
        args["temperature"] = float(temperature)
    return args


def pct(s: float) -> int:
    return round(100 * float(s))


def pruned_teacher(P, sec: dict, score: str, sparsity: float, seed: int) -> TrainConfig:
    """The pair's teacher pruned one-shot to `sparsity` by `score` ("prue" or "magnitude") and
    fine-tuned from its dense weights with its own recipe for `fine_tune_fraction` of its epochs."""
    dense = P.teacher_config(sec["pair"]["teacher"], seed)
    epochs = max(1, int(round(float(sec["fine_tune_fraction"]) * dense.epochs)))
    return dense.replace(init_from=dense, epochs=epochs,
                         prune={"amount": float(sparsity), "score": score, "layers": sec["layers"]})


def teacher_labels(sec: dict) -> dict[str, tuple[str, float]]:
    """{row label: (score, sparsity)} of the pruned teachers, PrUE first."""
    out = {f"PrUE {pct(s)}%": ("prue", float(s)) for s in sec["sparsities"]}
    out[f"magnitude {pct(sec['compare_sparsity'])}%"] = ("magnitude", float(sec["compare_sparsity"]))
    return out


def plan(P, sec: dict) -> dict[str, dict[str, list[TrainConfig]]]:
    """{group: {row label: [TrainConfig per seed]}}: "teachers" ("dense" and each pruned teacher) and
    "main" ("CE", "KD, <teacher>" for every teacher, "KD, dense, T=<t>" for each matching temperature)."""
    if float(sec["compare_sparsity"]) not in [float(s) for s in sec["sparsities"]]:
        raise ValueError(f"prue.compare_sparsity {sec['compare_sparsity']} must be one of prue.sparsities "
                         f"{sec['sparsities']}: claims 2 and 3 compare the PrUE teacher at that sparsity")
    pair = sec["pair"]
    out: dict[str, dict[str, list[TrainConfig]]] = {"teachers": {}, "main": {}}
    for seed in P.seeds:
        teachers = {"dense": P.teacher_config(pair["teacher"], seed)}
        for name, (score, s) in teacher_labels(sec).items():
            teachers[name] = pruned_teacher(P, sec, score, s, seed)
        for name, t in teachers.items():
            out["teachers"].setdefault(name, []).append(t)
        s = pair["student"]
        out["main"].setdefault("CE", []).append(P.config(s, "ce", seed=seed, paper="prue"))
        for name, t in teachers.items():
            out["main"].setdefault(f"KD, {name}", []).append(
                P.config(s, "kd", seed=seed, method_args=kd_args(sec), teacher=t, paper="prue"))
        for T in sec["match_temperatures"]:
            out["main"].setdefault(matched_label(T), []).append(
                P.config(s, "kd", seed=seed, method_args=kd_args(sec, T), teacher=teachers["dense"], paper="prue"))
    return out


def matched_label(temperature: float) -> str:
    return f"KD, dense, T={float(temperature):g}"


def teacher_names(P, sec: dict) -> list[str]:
    return [sec["pair"]["teacher"]]


def matched_temperature(dense_run, target_entropy: float, sec: dict) -> tuple[float, dict[float, float]]:
    """The temperature, of the KD temperature and `match_temperatures`, at which the dense teacher's
    `output_entropy` is closest to `target_entropy` (the PrUE teacher's at the KD temperature), and
    the dense teacher's entropy at each. Chosen from the teachers' outputs only, never from the
    students' accuracies; the KD temperature itself when the PrUE teacher is not the softer one."""
    candidates = [float(sec["kd"]["temperature"]), *[float(T) for T in sec["match_temperatures"]]]
    entropies = {T: output_entropy(dense_run, T) for T in candidates}
    return min(entropies, key=lambda T: abs(entropies[T] - target_entropy)), entropies


def matched_row(sec: dict, temperature: float) -> str:
    """The main row of the dense teacher distilling at `temperature`."""
    return "KD, dense" if float(temperature) == float(sec["kd"]["temperature"]) else matched_label(temperature)
