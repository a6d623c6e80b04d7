"""``posegnn-report``: read a multirun folder and answer the report's questions from it.

Every job folder of a sweep (``<sweep>/<job_num>/``) holds ``job_status.json``,
``metrics.json``, ``csv/metrics.csv`` and ``.hydra/{config,overrides}.yaml``.
:func:`build_report` reads them all, writes ``report.md`` with a table of every job
(failed jobs marked, with their error), loss curves, and one paragraph per open question
of the seed report, each answered from the numbers: means of the jobs grouped by the
factor's value, and the jobs that differ only in that factor compared one to one.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from omegaconf import OmegaConf

from posegnn.figures import bar_chart, loss_curves, save_figure
from posegnn.io import atomic_write

STATUS_FILE = "job_status.json"
REL_TOL = 0.02  # a loss change smaller than 2% counts as flat
TIE = 5e-4  # metric differences below the report's 3 decimals are ties


# -- reading a sweep ----------------------------------------------------------------------
@dataclass
class Job:
    """One job folder of a sweep, as far as it got."""

    name: str
    path: Path
    status: str  # completed | failed | unknown
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # flat: "optimizer.lr" -> 0.001
    metrics: dict = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)  # "epoch", "val/loss", ...

    @property
    def ok(self) -> bool:
        return self.status == "completed" and bool(self.metrics)

    def metric(self, key: str) -> float | None:
        return _finite(self.metrics.get(key))

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a per-epoch series, where it was logged."""
        epoch = np.asarray(self.curves.get("epoch", []), dtype=np.float64)
        y = np.asarray(self.curves.get(key, [np.nan] * len(epoch)), dtype=np.float64)
        keep = np.isfinite(y)
        return epoch[keep], y[keep]

    # summary numbers of the jobs table -------------------------------------------------
    def best_val_loss(self) -> tuple[float | None, int | None]:
        epoch, y = self.curve("val/loss")
        if len(y):
            i = int(np.argmin(y))
            return float(y[i]), int(epoch[i])
        return self.metric("val/loss"), None

    def last(self, key: str) -> float | None:
        _, y = self.curve(key)
        return float(y[-1]) if len(y) else self.metric(key)

    def epochs(self) -> int | None:
        value = self.metric("epochs")
        if value is not None:
            return int(value)
        epoch, _ = self.curve("train/loss")
        return int(epoch.max()) + 1 if len(epoch) else None


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _flatten(tree, prefix: str = "") -> dict:
    out: dict = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, list):
        out[prefix[:-1]] = json.dumps(tree)
    else:
        out[prefix[:-1]] = tree
    return out


def _read_config(path: Path) -> dict:
    """The job's composed config, flattened, interpolations resolved where they can be."""
    if not path.is_file():
        return {}
    cfg = OmegaConf.load(path)
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. a resolver (${now:...}) this process does not know
        tree = OmegaConf.to_container(cfg, resolve=False)
    return _flatten(tree)


def _read_curves(job_dir: Path) -> dict[str, list[float]]:
    """Per-epoch train/ and val/ series from Lightning's CSVLogger file (rows merged by
    epoch; the learning-rate rows without an epoch and the test row are left out)."""
    path = job_dir / "csv" / "metrics.csv"
    if not path.is_file():
        found = sorted(p for p in job_dir.rglob("metrics.csv") if "wandb" not in p.parts)
        if not found:
            return {}
        path = found[0]
    by_epoch: dict[int, dict[str, float]] = defaultdict(dict)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or ""))
            except ValueError:
                continue
            for key, value in row.items():
                if key and key.startswith(("train/", "val/")) and value not in ("", None):
                    number = _finite(value)
                    if number is not None:
                        by_epoch[epoch][key] = number
    epochs = sorted(e for e, values in by_epoch.items() if values)
    keys = sorted({k for e in epochs for k in by_epoch[e]})
    curves: dict[str, list[float]] = {"epoch": [float(e) for e in epochs]}
    for key in keys:
        curves[key] = [by_epoch[e].get(key, math.nan) for e in epochs]
    return curves


def _read_overrides(job_dir: Path, status: dict) -> list[str]:
    if status.get("overrides") is not None:
        return [str(o) for o in status["overrides"]]
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    return []


def load_job(job_dir: str | Path) -> Job:
    """Everything a job folder holds; a missing or broken file makes a note, not a crash."""
    job_dir = Path(job_dir)
    status: dict = {}
    notes: list[str] = []
    status_path = job_dir / STATUS_FILE
    if status_path.is_file():
        try:
            status = json.loads(status_path.read_text())
        except json.JSONDecodeError as e:
            notes.append(f"{status_path}: unreadable ({e})")
    metrics: dict = {}
    metrics_path = job_dir / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as e:
            notes.append(f"{metrics_path}: unreadable ({e})")
    state = status.get("status")
    if state not in ("completed", "failed"):
        state = "completed" if metrics else "unknown"
        if not metrics:
            notes.append("no job_status.json and no metrics.json: the job was killed, "
                         "is still running, or never started")
    elif state == "completed" and not metrics:
        notes.append("completed, but metrics.json is missing")
    error = status.get("error")
    if notes:
        error = "; ".join([error, *notes] if error else notes)
    return Job(name=job_dir.name, path=job_dir, status=state, error=error,
               overrides=_read_overrides(job_dir, status),
               config=_read_config(job_dir / ".hydra" / "config.yaml"), metrics=metrics,
               curves=_read_curves(job_dir))


def _is_job_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in
                                 (STATUS_FILE, "metrics.json", ".hydra"))


def _job_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def load_sweep(sweep_dir: str | Path) -> list[Job]:
    """The jobs of a multirun folder, by job number (a single run folder is one job)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: not a directory (expected a multirun folder)")
    dirs = sorted((p for p in sweep_dir.iterdir() if _is_job_dir(p)), key=_job_order)
    if not dirs and _is_job_dir(sweep_dir):
        dirs = [sweep_dir]
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no job folders (none holds {STATUS_FILE}, "
                                "metrics.json or .hydra/)")
    return [load_job(d) for d in dirs]


# -- comparing the jobs by one factor -----------------------------------------------------
@dataclass(frozen=True)
class Factor:
    """A swept variable, read from the resolved config so that ``model=edgeconv_attr`` and
    ``model.conv=edgeconv_attr`` are the same thing. ``owns``: config leaves (prefixes)
    that change together with it and so do not count as another difference."""

    name: str
    leaf: str
    owns: tuple[str, ...]
    keeps: tuple[str, ...] = ()  # leaves under ``owns`` that are a factor of their own

    def owned(self, leaf: str) -> bool:
        if leaf in self.keeps:
            return False
        return any(leaf == o or leaf.startswith(o.rstrip(".") + ".") for o in self.owns)


NORMALIZATION = Factor("normalization", "graph.normalization", ("graph.normalization",))
CONV = Factor("convolution", "model.conv", ("model",))
OPTIMIZER = Factor("optimizer", "optimizer.name", ("optimizer",), keeps=("optimizer.lr",))
LR = Factor("learning rate", "optimizer.lr", ("optimizer.lr",))
FACTORS = (NORMALIZATION, CONV, OPTIMIZER, LR)


@dataclass
class Metric:
    label: str
    get: Callable[[Job], float | None]
    lower_is_better: bool


BEST_VAL_LOSS = Metric("best val loss", lambda j: j.best_val_loss()[0], True)
TRAIN_LOSS = Metric("final train loss", lambda j: j.last("train/loss"), True)
VAL_EDGE_ACC = Metric("val edge acc", lambda j: j.last("val/edge_acc"), False)
TEST_GNN_AP = Metric("test gnn AP", lambda j: j.metric("test/gnn/AP"), False)


def factor_value(job: Job, factor: Factor):
    return job.config.get(factor.leaf)


def varying_leaves(jobs: Sequence[Job]) -> list[str]:
    """Config leaves whose value differs between the jobs."""
    leaves = sorted({k for j in jobs for k in j.config})
    return [k for k in leaves if len({repr(j.config.get(k)) for j in jobs}) > 1]


def _fmt_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class Comparison:
    """The jobs grouped by one factor's value, for one metric."""

    factor: Factor
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


def compare(jobs: Sequence[Job], factor: Factor, metric: Metric) -> Comparison | None:
    """Group the completed jobs by ``factor`` (None when it does not vary). Jobs alike in
    every other varying config leaf form one matched setting."""
    rows = [(j, factor_value(j, factor), metric.get(j)) for j in jobs if j.ok]
    rows = [(j, v, m) for j, v, m in rows if v is not None and m is not None]
    values = sorted({v for _, v, _ in rows}, key=lambda v: (str(type(v)), v))
    if len(values) < 2:
        return None
    groups: dict = {v: [(j, m) for j, vv, m in rows if vv == v] for v in values}
    varying = varying_leaves([j for j, _, _ in rows])
    # a kept leaf (optimizer.lr) that only follows the factor's defaults moves with it
    follows = [k for k in varying if k in factor.keeps and all(
        len({repr(j.config.get(k)) for j, vv, _ in rows if vv == v}) == 1 for v in values)]
    others = [k for k in varying if not factor.owned(k) and k not in follows]
    settings: dict[tuple, dict] = defaultdict(dict)
    for j, v, m in rows:
        key = tuple((k, _fmt_value(j.config.get(k))) for k in others)
        settings[key].setdefault(v, (j, m))
    matched = [(k, by_value) for k, by_value in settings.items() if len(by_value) > 1]
    return Comparison(factor, metric, values, groups, matched, follows)


def _jobs_list(jobs: Iterable[Job]) -> str:
    return ", ".join(f"#{j.name}" for j in jobs)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def comparison_markdown(jobs: Sequence[Job], factor: Factor, metrics: Sequence[Metric],
                        names: dict | None = None) -> tuple[str, dict]:
    """A table of means per factor value and one line per metric with the matched-pair
    evidence; returns (markdown, {metric label: verdict dict}) or a 'not swept' note."""
    names = names or {}
    comps = [c for c in (compare(jobs, factor, m) for m in metrics) if c is not None]
    values_seen = sorted({_fmt_value(factor_value(j, factor)) for j in jobs
                          if factor_value(j, factor) is not None})
    if not comps:
        where = (f"every completed job has `{factor.leaf}={values_seen[0]}`"
                 if len(values_seen) == 1 else f"`{factor.leaf}` is not in the job configs")
        return (f"**Not swept**: {where}, so this sweep cannot answer it. Sweep it, e.g. "
                f"`posegnn-train -m sweep=seed_questions`.", {})
    values = comps[0].values
    head = ["`" + factor.leaf + "`", "jobs", *[f"mean {c.metric.label}" for c in comps]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in values:
        members = comps[0].groups.get(v, [])
        cells = [names.get(v, _fmt_value(v)), _jobs_list(j for j, _ in members)]
        cells += [_num(c.mean(v)) if v in c.groups else "-" for c in comps]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if comps[0].follows:
        lines.append(f"(The jobs also differ in {', '.join(f'`{k}`' for k in comps[0].follows)}"
                     ", which follows the value of "
                     f"`{factor.leaf}` here: it is compared along with it.)\n")
    verdicts: dict = {}
    for c in comps:
        best = c.best_value()
        won, total = c.wins(best)
        others = [v for v in c.values if v != best]
        word = "lower" if c.metric.lower_is_better else "higher"
        diffs = ", ".join(f"{_num(c.mean(best))} vs {_num(c.mean(v))} for "
                          f"`{names.get(v, _fmt_value(v))}`" for v in others)
        if c.tied():
            lines.append(f"- {c.metric.label}: the same mean ({_num(c.mean(best))}) for every "
                         "value.")
            continue
        text = (f"- {c.metric.label}: `{names.get(best, _fmt_value(best))}` has the {word} "
                f"mean ({diffs})")
        if total:
            order = " vs ".join(f"`{names.get(v, _fmt_value(v))}`" for v in c.values)
            pairs = "; ".join(
                " vs ".join(f"#{by[v][0].name} {_num(by[v][1])}" for v in c.values if v in by)
                for _, by in c.matched)
            text += (f"; it is {'the ' if len(c.values) > 2 else ''}{word} in {won} of "
                     f"{total} settings that differ only in `{factor.leaf}` ({order}: "
                     f"{pairs}).")
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


def _answer(factor: Factor, verdicts: dict, names: dict | None = None,
            primary: str = BEST_VAL_LOSS.label) -> str:
    names = names or {}
    if not verdicts:
        return ""
    label = primary if primary in verdicts else next(iter(verdicts))
    v = verdicts[label]
    best = f"`{names.get(v['best'], _fmt_value(v['best']))}`"
    agree = [k for k, w in verdicts.items() if k != label and w["best"] == v["best"]]
    disagree = [k for k, w in verdicts.items() if k != label and w["best"] != v["best"]]
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


# -- question 2: what the loss curves do --------------------------------------------------
@dataclass
class CurveDiagnosis:
    overfitting: bool
    lr_too_high: bool
    detail: str
    usable: bool = True

    @property
    def pattern(self) -> str:
        if not self.usable:
            return "too short to tell"
        if self.overfitting and self.lr_too_high:
            return "both"
        if self.overfitting:
            return "overfitting"
        if self.lr_too_high:
            return "lr too high"
        return "neither"


def diagnose_curves(train: Sequence[float], val: Sequence[float],
                    tol: float = REL_TOL) -> CurveDiagnosis:
    """Read one job's per-epoch losses (aligned by epoch, NaN where missing).

    *Learning rate too high*: the training loss itself rises after its minimum or
    oscillates (at least two epoch-to-epoch increases, a quarter of the steps or more).
    *Overfitting*: the validation loss ends above its minimum while the training loss
    keeps falling after that epoch. A change within ``tol`` (relative) counts as flat."""
    train = np.asarray(train, dtype=np.float64)
    val = np.asarray(val, dtype=np.float64)
    t_ok, v_ok = np.isfinite(train), np.isfinite(val)
    if t_ok.sum() < 3 and v_ok.sum() < 3:
        return CurveDiagnosis(False, False, f"{int(max(t_ok.sum(), v_ok.sum()))} epochs",
                              usable=False)
    parts: list[str] = []
    lr_high = False
    if t_ok.sum() >= 3:
        t = train[t_ok]
        i_min = int(np.argmin(t))
        rises = t[-1] > t[i_min] * (1 + tol) and i_min < len(t) - 1
        ups = int((np.diff(t) > tol * np.abs(t[:-1])).sum())
        oscillates = ups >= max(2, math.ceil(0.25 * (len(t) - 1)))
        lr_high = bool(rises or oscillates)
        trend = f"train {t[0]:.3f} -> {t[-1]:.3f}"
        if rises:
            trend += f", rising after its minimum {t[i_min]:.3f}"
        if oscillates:
            trend += f", up in {ups} of {len(t) - 1} epochs"
        parts.append(trend)
    overfit = False
    if v_ok.sum() >= 3:
        idx = np.flatnonzero(v_ok)
        v = val[idx]
        j = int(np.argmin(v))
        e_min, e_last = int(idx[j]), int(idx[-1])
        val_rises = v[-1] > v[j] * (1 + tol) and j < len(v) - 1
        after = train[e_min:e_last + 1]
        after = after[np.isfinite(after)]
        train_falls = len(after) >= 2 and after[-1] < after[0] * (1 - tol / 2)
        overfit = bool(val_rises and train_falls)
        text = f"val min {v[j]:.3f} at epoch {e_min}, last {v[-1]:.3f}"
        if val_rises:
            text += " (rising" + (" while train falls)" if train_falls else ")")
        parts.append(text)
    return CurveDiagnosis(overfit, lr_high, "; ".join(parts))


def job_diagnosis(job: Job) -> CurveDiagnosis:
    epoch = np.asarray(job.curves.get("epoch", []), dtype=np.float64)
    if not len(epoch):
        return CurveDiagnosis(False, False, "no csv/metrics.csv", usable=False)
    nan = [math.nan] * len(epoch)
    return diagnose_curves(job.curves.get("train/loss", nan), job.curves.get("val/loss", nan))


def question_2(jobs: Sequence[Job], labels: dict[str, str]) -> str:
    done = [j for j in jobs if j.curves]
    if not done:
        return "No job has loss curves (csv/metrics.csv): run with `logger=csv` (the default)."
    diag = {j.name: job_diagnosis(j) for j in done}
    lines = ["| job | lr | optimizer | pattern | curves |", "|---|---|---|---|---|"]
    for j in done:
        d = diag[j.name]
        lines.append(f"| #{j.name} {labels[j.name]} | {_fmt_value(factor_value(j, LR))} | "
                     f"{factor_value(j, OPTIMIZER)} | **{d.pattern}** | {d.detail} |")
    lines.append("")
    by_pattern: dict[str, list[Job]] = defaultdict(list)
    for j in done:
        by_pattern[diag[j.name].pattern].append(j)
    usable = [j for j in done if diag[j.name].usable]
    over = [j for j in usable if diag[j.name].overfitting]
    high = [j for j in usable if diag[j.name].lr_too_high]
    lrs = sorted({factor_value(j, LR) for j in done if factor_value(j, LR) is not None})
    if len(lrs) > 1 and usable:
        for lr in lrs:
            at = [j for j in usable if factor_value(j, LR) == lr]
            n_high = sum(diag[j.name].lr_too_high for j in at)
            n_over = sum(diag[j.name].overfitting for j in at)
            lines.append(f"- lr {_fmt_value(lr)}: {n_high}/{len(at)} jobs with a rising or "
                         f"oscillating train loss, {n_over}/{len(at)} overfitting.")
        lines.append("")
    elif len(lrs) <= 1:
        lines.append(f"- The learning rate is not swept (every job: lr "
                     f"{', '.join(_fmt_value(v) for v in lrs) or 'unknown'}).\n")
    n_epochs = max((len(j.curves.get("epoch", [])) for j in usable), default=0)
    if not usable:
        answer = ("**Answer:** the runs are too short (fewer than 3 epochs) to tell a "
                  "trend; train longer (`trainer.max_epochs`).")
    elif not over and not high:
        answer = (f"**Answer:** neither pattern appears in these runs (up to {n_epochs} "
                  "epochs): train and val losses fall or flatten to the end. If the rise "
                  "shows after longer training, rerun with more epochs.")
    else:
        bits = []
        if high:
            bits.append(f"a learning rate too high in {_jobs_list(high)} (the train loss "
                        "itself rises or oscillates)")
        if over:
            bits.append(f"overfitting in {_jobs_list(over)} (val rises after its minimum "
                        "while train keeps falling)")
        answer = "**Answer:** " + "; ".join(bits) + "."
        ulrs = sorted({factor_value(j, LR) for j in usable} - {None})
        if high and len(ulrs) > 1:
            rate = {lr: np.mean([diag[j.name].lr_too_high for j in usable
                                 if factor_value(j, LR) == lr]) for lr in ulrs}
            lo, hi = ulrs[0], ulrs[-1]
            if rate[hi] > rate[lo]:
                answer += (f" The unstable train loss is more frequent at lr {_fmt_value(hi)}"
                           f" ({rate[hi]:.0%} of its jobs) than at {_fmt_value(lo)} "
                           f"({rate[lo]:.0%}): the learning rate is the cause.")
            else:
                answer += (" It is not more frequent at the higher learning rate, so the "
                           "learning rate alone does not explain it.")
    return "\n".join(lines) + "\n" + answer


# -- the report ---------------------------------------------------------------------------
QUESTIONS = (
    "1. Feature normalization: per feature map or over the whole dataset?",
    "2. The loss starts low, then rises: overfitting or a learning rate too high?",
    "3. Do edge features in the message passing improve the fit?",
    "4. Adam or SGD?",
)
CONV_NAMES = {"edgeconv": "edgeconv (no edge features)",
              "edgeconv_attr": "edgeconv_attr (edge features)"}


def job_labels(jobs: Sequence[Job]) -> tuple[dict[str, str], list[str]]:
    """Each job's overrides that not every job shares, and the shared ones."""
    common = [o for o in jobs[0].overrides if all(o in j.overrides for j in jobs)] \
        if len(jobs) > 1 else []
    labels = {j.name: ",".join(o for o in j.overrides if o not in common) or "(defaults)"
              for j in jobs}
    return labels, common


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def jobs_table(jobs: Sequence[Job], labels: dict[str, str]) -> str:
    extra = [k for k in ("AP50", "AP75", "AP_hard")
             if any(j.metric(f"test/gnn/{k}") is not None for j in jobs)]
    head = ["job", "overrides", "status", "best val loss (epoch)", "last val loss",
            "val edge acc", "final train loss", "test edge acc", "gnn AP", "ae AP",
            "oracle AP", *[f"gnn {k}" for k in extra], "epochs", "fit s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for j in jobs:
        best, at = j.best_val_loss()
        status = "completed" if j.ok else f"**{j.status.upper()}**"
        if j.error:
            status += f": {_cell(j.error, 100)}"
        fit = j.metric("time/fit_s")
        cells = [f"#{j.name}", f"`{labels[j.name]}`", status,
                 _num(best) + (f" ({at})" if at is not None else ""),
                 _num(j.last("val/loss")), _num(j.last("val/edge_acc")),
                 _num(j.last("train/loss")), _num(j.metric("test/gnn/edge_acc")),
                 _num(j.metric("test/gnn/AP")), _num(j.metric("test/ae/AP")),
                 _num(j.metric("test/oracle/AP")),
                 *[_num(j.metric(f"test/gnn/{k}")) for k in extra],
                 str(j.epochs() if j.epochs() is not None else "-"),
                 f"{fit:.1f}" if fit is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ap_table(jobs: Sequence[Job], labels: dict[str, str]) -> str | None:
    """Test OKS AP of every grouping, one row per completed job."""
    keys = ("AP", "AP50", "AP75", "AP_hard")
    groupings = [g for g in ("gnn", "ae", "oracle")
                 if any(j.metric(f"test/{g}/AP") is not None for j in jobs)]
    done = [j for j in jobs if j.ok and any(j.metric(f"test/{g}/AP") is not None
                                            for g in groupings)]
    if not done:
        return None
    head = ["job", *[f"{g} {k}" for g in groupings for k in keys]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for j in done:
        cells = [_num(j.metric(f"test/{g}/{k}")) for g in groupings for k in keys]
        lines.append(f"| #{j.name} `{_cell(labels[j.name], 60)}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _factor_figure(jobs: Sequence[Job], factor: Factor | None, labels: dict[str, str],
                   path: Path, title: str) -> Path | None:
    with_curves = [j for j in jobs if j.curves]
    if not with_curves:
        return None
    # long override lists would swamp the legend: number the jobs as the Jobs table does
    short = len(with_curves) > 1 and max(len(labels[j.name]) for j in with_curves) > 30
    names = {j.name: f"#{j.name}" if short else f"#{j.name} {labels[j.name]}"
             for j in with_curves}
    curves = {names[j.name]: j.curves for j in with_curves}
    groups = None
    if factor is not None:
        groups = {names[j.name]: _fmt_value(factor_value(j, factor)) for j in with_curves}
    return save_figure(loss_curves(curves, groups=groups,
                                   group_name=factor.leaf if factor else None,
                                   title=title), path)


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for the multirun folder ``sweep_dir``
    (into ``out_dir``, by default ``sweep_dir`` itself); returns the report's path."""
    sweep_dir = Path(sweep_dir)
    jobs = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    labels, common = job_labels(jobs)
    swept = [f for f in FACTORS if len({repr(factor_value(j, f)) for j in jobs if j.ok}) > 1]
    failed = [j for j in jobs if not j.ok]

    md = [f"# Sweep report: {sweep_dir.name}", "",
          f"`{sweep_dir}`: {len(jobs)} jobs, {len(jobs) - len(failed)} completed, "
          f"{len(failed)} failed or incomplete."]
    if common:
        md.append(f"Overrides shared by every job: `{' '.join(common)}`.")
    md.append("Swept factors (from each job's resolved config): "
              + (", ".join(f"`{f.leaf}`" for f in swept) or "none of the four questions'")
              + ".")
    md += ["", "## Jobs", "", jobs_table(jobs, labels), ""]
    if failed:
        md.append("Failed or incomplete jobs (their folders hold the log):")
        md += [f"- #{j.name} `{labels[j.name]}`: {j.status}: {j.error or 'no error recorded'}"
               for j in failed]
        md.append("")
    table = ap_table(jobs, labels)
    if table:
        md += ["## Test AP of every grouping (OKS)", "", table, ""]
        ap = {f"#{j.name}": {g: j.metric(f"test/{g}/AP") for g in ("gnn", "ae", "oracle")
                             if j.metric(f"test/{g}/AP") is not None} for j in jobs if j.ok}
        save_figure(bar_chart(ap, "test AP", "Test AP per job and grouping"),
                    out / "test_ap.png")
        md += ["![test AP per job](test_ap.png)", ""]

    figures: dict[str, str] = {}
    only = swept[0] if len(swept) == 1 else None
    if _factor_figure(jobs, only, labels, out / "loss_curves.png", "Loss per epoch"):
        figures["all"] = "loss_curves.png"
        md += ["## Loss curves", "", "![loss curves](loss_curves.png)", ""]
    for f in swept:
        name = f"loss_curves_{f.leaf.replace('.', '_')}.png"
        if _factor_figure(jobs, f, labels, out / name, f"Loss per epoch by {f.leaf}"):
            figures[f.name] = name

    md += ["## Questions of the report", ""]
    specs = [
        (QUESTIONS[0], NORMALIZATION, [BEST_VAL_LOSS, VAL_EDGE_ACC, TEST_GNN_AP], {}),
        (QUESTIONS[2], CONV, [TRAIN_LOSS, BEST_VAL_LOSS, VAL_EDGE_ACC, TEST_GNN_AP],
         CONV_NAMES),
        (QUESTIONS[3], OPTIMIZER, [BEST_VAL_LOSS, TRAIN_LOSS, VAL_EDGE_ACC, TEST_GNN_AP], {}),
    ]
    sections: dict[str, list[str]] = {}
    for heading, factor, metrics, names in specs:
        body, verdicts = comparison_markdown(jobs, factor, metrics, names)
        text = [f"### {heading}", "", body, ""]
        if verdicts:
            primary = TRAIN_LOSS.label if factor is CONV else BEST_VAL_LOSS.label
            text += [_answer(factor, verdicts, names, primary), ""]
        if factor is OPTIMIZER and verdicts:
            text += [_best_per_value(jobs, factor), ""]
        if factor.name in figures:
            text += [f"![loss by {factor.leaf}]({figures[factor.name]})", ""]
        sections[heading] = text
    q2 = [f"### {QUESTIONS[1]}", "", question_2(jobs, labels), ""]
    if LR.name in figures:
        q2 += [f"![loss by {LR.leaf}]({figures[LR.name]})", ""]
    sections[QUESTIONS[1]] = q2
    for heading in QUESTIONS:
        md += sections[heading]
    md += ["---", "Means are over the completed jobs with each value; a *matched setting* is "
           "a set of jobs equal in every other varying config value. Lower is better for "
           "losses, higher for accuracy and AP. A winner is called *clear* when it wins in "
           "at least 3/4 of the matched settings; with few jobs per setting, check the "
           "spread in the tables before trusting a small difference.", ""]
    report = out / "report.md"
    text = "\n".join(md)
    atomic_write(report, lambda f: f.write(text.encode()))
    return report


def _best_per_value(jobs: Sequence[Job], factor: Factor) -> str:
    """The best job (lowest best val loss) of each value, with its learning rate: a fair
    Adam vs SGD comparison takes each at its own best learning rate."""
    parts = []
    for value in sorted({factor_value(j, factor) for j in jobs if j.ok} - {None}, key=str):
        cands = [(j.best_val_loss()[0], j) for j in jobs
                 if j.ok and factor_value(j, factor) == value and j.best_val_loss()[0] is not None]
        if cands:
            loss, j = min(cands, key=lambda c: c[0])
            parts.append(f"`{value}` at its best: #{j.name} (lr "
                         f"{_fmt_value(factor_value(j, LR))}), best val loss {loss:.3f}, "
                         f"test gnn AP {_num(j.metric('test/gnn/AP'))}")
    return "Each at its best learning rate: " + "; ".join(parts) + "."
