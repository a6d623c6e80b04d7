"""A curves question of the report: what each job's loss curves do (overfitting, a
learning rate too high, both or neither)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from posegnn.report.compare import REL_TOL, fmt_value, jobs_list, md_table
from posegnn.report.sweep import Job


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


def curves_answer(jobs: Sequence[Job], labels: dict[str, str], lr: str) -> str:
    """What the loss curves of every job do, and how that follows the learning rate (the
    config leaf ``lr``)."""
    done = [j for j in jobs if j.curves]
    if not done:
        return "No job has loss curves (csv/metrics.csv): run with `logger=csv` (the default)."
    diag = {j.name: job_diagnosis(j) for j in done}
    short = lr.rsplit(".", 1)[-1]
    lines = [md_table(["job", short, "pattern", "curves"],
                      [[f"#{j.name} {labels[j.name]}", fmt_value(j.config.get(lr)),
                        f"**{diag[j.name].pattern}**", diag[j.name].detail] for j in done]), ""]
    usable = [j for j in done if diag[j.name].usable]
    over = [j for j in usable if diag[j.name].overfitting]
    high = [j for j in usable if diag[j.name].lr_too_high]
    lrs = sorted({j.config.get(lr) for j in done} - {None})
    if len(lrs) > 1 and usable:
        for value in lrs:
            at = [j for j in usable if j.config.get(lr) == value]
            lines.append(f"- {short} {fmt_value(value)}: "
                         f"{sum(diag[j.name].lr_too_high for j in at)}/{len(at)} jobs with a "
                         "rising or oscillating train loss, "
                         f"{sum(diag[j.name].overfitting for j in at)}/{len(at)} overfitting.")
        lines.append("")
    elif len(lrs) <= 1:
        lines.append(f"- The learning rate is not swept (every job: {short} "
                     f"{', '.join(fmt_value(v) for v in lrs) or 'unknown'}).\n")
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
            bits.append(f"a learning rate too high in {jobs_list(high)} (the train loss "
                        "itself rises or oscillates)")
        if over:
            bits.append(f"overfitting in {jobs_list(over)} (val rises after its minimum "
                        "while train keeps falling)")
        answer = "**Answer:** " + "; ".join(bits) + "."
        ulrs = sorted({j.config.get(lr) for j in usable} - {None})
        if high and len(ulrs) > 1:
            rate = {v: np.mean([diag[j.name].lr_too_high for j in usable
                                if j.config.get(lr) == v]) for v in ulrs}
            lo, hi = ulrs[0], ulrs[-1]
            if rate[hi] > rate[lo]:
                answer += (f" The unstable train loss is more frequent at {short} "
                           f"{fmt_value(hi)} ({rate[hi]:.0%} of its jobs) than at "
                           f"{fmt_value(lo)} ({rate[lo]:.0%}): the learning rate is the cause.")
            else:
                answer += (" It is not more frequent at the higher learning rate, so the "
                           "learning rate alone does not explain it.")
    return "\n".join(lines) + "\n" + answer
