"""Compare the jobs of a sweep by one question's factor: means per value, matched pairs."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from posegnn.config import QuestionConfig
from posegnn.report.sweep import Job

REL_TOL = 0.02  # a loss change smaller than 2% counts as flat
MIN_EPOCHS = 3  # shorter runs are too short to tell a trend or a winner
TIE = 5e-4  # metric differences below the report's 3 decimals are ties


@dataclass
class Metric:
    label: str
    get: Callable[[Job], float | None]
    lower_is_better: bool


# what a question's ``metrics`` may name
METRICS = {m.label: m for m in (
    Metric("best val loss", lambda j: j.best_val_loss()[0], True),
    Metric("final train loss", lambda j: j.last("train/loss"), True),
    Metric("val edge acc", lambda j: j.last("val/edge_acc"), False),
    Metric("test gnn AP", lambda j: j.metric("test/gnn/AP"), False),
    Metric("val gnn AP (last epoch)", lambda j: j.last("val/gnn/AP"), False))}


def owned(q: QuestionConfig, leaf: str) -> bool:
    """Whether ``leaf`` changes along with the question's factor (the config read
    resolved, so that ``model=edgeconv_attr`` and ``model.conv=edgeconv_attr`` agree)."""
    if leaf in q.keeps:
        return False
    return any(leaf == o or leaf.startswith(o + ".") for o in q.owns or [q.factor])


def varying_leaves(jobs: Sequence[Job]) -> list[str]:
    """Config leaves whose value differs between the jobs."""
    leaves = sorted({k for j in jobs for k in j.config})
    return [k for k in leaves if len({repr(j.config.get(k)) for j in jobs}) > 1]


def fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def jobs_list(jobs: Iterable[Job]) -> str:
    return ", ".join(f"#{j.name}" for j in jobs)


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


@dataclass
class Comparison:
    """The jobs grouped by one factor's value, for one metric."""

    metric: Metric
    values: list  # factor values, sorted
    groups: dict  # value -> [(job, metric value)]
    matched: list[tuple[tuple, dict]]  # (other settings, {value: (job, metric value)})
    follows: list[str] = field(default_factory=list)  # leaves that move with the factor

    def mean(self, value) -> float:
        return float(np.mean([m for _, m in self.groups[value]]))

    def best_value(self):
        pick = min if self.metric.lower_is_better else max
        return pick(self.values, key=self.mean)

    def wins(self, value) -> tuple[int, int]:
        """(settings where ``value`` is the best, settings compared with it)."""
        won = total = 0
        sign = 1.0 if self.metric.lower_is_better else -1.0
        for _, by_value in self.matched:
            if value in by_value:
                total += 1
                mine = sign * by_value[value][1]
                won += all(mine < sign * m - TIE for v, (_, m) in by_value.items()
                           if v != value)  # a tie is no win
        return won, total

    def tied(self) -> bool:
        means = [self.mean(v) for v in self.values]
        return max(means) - min(means) < TIE


def compare(jobs: Sequence[Job], q: QuestionConfig, metric: Metric) -> Comparison | None:
    """Group the completed jobs by the question's factor (None when it does not vary). Jobs
    alike in every other varying config leaf form one matched setting."""
    rows = [(j, j.config.get(q.factor), metric.get(j)) for j in jobs if j.ok]
    rows = [(j, v, m) for j, v, m in rows if v is not None and m is not None]
    values = sorted({v for _, v, _ in rows}, key=lambda v: (str(type(v)), v))
    if len(values) < 2:
        return None
    groups: dict = {v: [(j, m) for j, vv, m in rows if vv == v] for v in values}
    varying = varying_leaves([j for j, _, _ in rows])
    # a kept leaf (optimizer.lr) that only follows the factor's defaults moves with it
    follows = [k for k in varying if k in q.keeps and all(
        len({repr(j.config.get(k)) for j, vv, _ in rows if vv == v}) == 1 for v in values)]
    others = [k for k in varying if not owned(q, k) and k not in follows]
    settings: dict[tuple, dict] = defaultdict(dict)
    for j, v, m in rows:
        key = tuple((k, fmt_value(j.config.get(k))) for k in others)
        settings[key].setdefault(v, (j, m))
    matched = [(k, by_value) for k, by_value in settings.items() if len(by_value) > 1]
    return Comparison(metric, values, groups, matched, follows)


def comparison_markdown(jobs: Sequence[Job], q: QuestionConfig) -> tuple[str, dict]:
    """A table of means per factor value and one line per metric with the matched-pair
    evidence; returns (markdown, {metric label: verdict dict}, in the question's order)
    or a 'not swept' note."""
    name = lambda v: q.names.get(v, fmt_value(v))  # noqa: E731
    comps = [c for c in (compare(jobs, q, METRICS[m]) for m in q.metrics) if c is not None]
    if not comps:
        seen = sorted({fmt_value(j.config[q.factor]) for j in jobs
                       if j.config.get(q.factor) is not None})
        where = (f"every completed job has `{q.factor}={seen[0]}`" if len(seen) == 1
                 else f"`{q.factor}` is not in the job configs")
        return (f"**Not swept**: {where}, so this sweep cannot answer it. Sweep it, e.g. "
                f"`posegnn-train -m sweep=seed_questions`.", {})
    values = comps[0].values
    rows = [[name(v), jobs_list(j for j, _ in comps[0].groups.get(v, [])),
             *[fmt_num(c.mean(v)) if v in c.groups else "-" for c in comps]] for v in values]
    lines = [md_table([f"`{q.factor}`", "jobs", *[f"mean {c.metric.label}" for c in comps]],
                      rows), ""]
    if comps[0].follows:
        lines.append(f"(The jobs also differ in {', '.join(f'`{k}`' for k in comps[0].follows)}"
                     f", which follows the value of `{q.factor}` here: it is compared along "
                     "with it.)\n")
    verdicts: dict = {}
    for c in comps:
        best = c.best_value()
        if c.tied():
            lines.append(f"- {c.metric.label}: the same mean ({fmt_num(c.mean(best))}) for every "
                         "value.")
            continue
        won, total = c.wins(best)
        word = "lower" if c.metric.lower_is_better else "higher"
        diffs = ", ".join(f"{fmt_num(c.mean(best))} vs {fmt_num(c.mean(v))} for `{name(v)}`"
                          for v in c.values if v != best)
        text = f"- {c.metric.label}: `{name(best)}` has the {word} mean ({diffs})"
        if total:
            pairs = "; ".join(
                " vs ".join(f"#{by[v][0].name} {fmt_num(by[v][1])}" for v in c.values if v in by)
                for _, by in c.matched)
            text += (f"; it is {'the ' if len(c.values) > 2 else ''}{word} in {won} of "
                     f"{total} settings that differ only in `{q.factor}` "
                     f"({' vs '.join(f'`{name(v)}`' for v in c.values)}: {pairs}).")
        else:
            text += ("; no two jobs differ only in this factor, so the means mix other "
                     "settings and may be confounded.")
        lines.append(text)
        verdicts[c.metric.label] = {"best": best, "won": won, "total": total,
                                    "clear": _clear(c, best, won, total)}
    return "\n".join(lines), verdicts


def _clear(c: Comparison, best, won: int, total: int) -> bool:
    """A difference worth stating: it holds in at least 3/4 of the matched settings (or,
    without matched settings, the means differ by more than REL_TOL)."""
    if total:
        return won >= 0.75 * total
    means = [c.mean(v) for v in c.values]
    spread = max(means) - min(means)
    return spread > REL_TOL * max(abs(c.mean(best)), 1e-12)


def short_runs(jobs: Sequence[Job]) -> int | None:
    """The longest completed job's epochs, when even it is too short to tell."""
    epochs = [j.epochs() for j in jobs if j.ok and j.epochs() is not None]
    longest = max(epochs, default=None)
    return longest if longest is not None and longest < MIN_EPOCHS else None


def answer(verdicts: dict, names: dict | None = None, short: int | None = None) -> str:
    """The verdict on the first metric that tells the values apart (the question lists
    AP first, where the jobs have it), with the metrics that agree or not; ``short``: the
    runs' epochs, when too few to tell."""
    if not verdicts:
        return ""
    label, v = next(iter(verdicts.items()))
    best = f"`{(names or {}).get(v['best'], fmt_value(v['best']))}`"
    agree = [k for k, w in verdicts.items() if k != label and w["best"] == v["best"]]
    disagree = [k for k, w in verdicts.items() if k != label and w["best"] != v["best"]]
    if short is not None:
        return (f"**Answer:** too short to tell: the jobs ran {short} epoch(s), fewer than "
                f"{MIN_EPOCHS}; rerun with `trainer.max_epochs` of {MIN_EPOCHS} or more. So "
                f"far {best} leads on {label}"
                + (f", while {', '.join(disagree)} favour another value" if disagree else "")
                + ".")
    if v["clear"]:
        text = f"**Answer:** {best} is better on {label}"
        if v["total"]:
            text += f" ({v['won']}/{v['total']} matched settings)"
    else:
        text = (f"**Answer:** no clear winner on {label}: {best} has the better mean, but "
                f"only in {v['won']}/{v['total']} matched settings")
    if agree:
        text += f"; {', '.join(agree)} agree"
    if disagree:
        text += f"; {', '.join(disagree)} favour another value"
    return text + "."
