"""``posegnn-report``: read a multirun folder and answer the report's questions from it.

Every job folder of a sweep (``<sweep>/<job_num>/``) holds ``job_status.json``,
``metrics.json``, ``csv/metrics.csv`` and ``.hydra/{config,overrides}.yaml``.
:func:`build_report` reads them all, writes ``report.md`` with a table of every job
(failed jobs marked, with their error), loss curves, and one paragraph per open question
of the seed report, each answered from the numbers: means of the jobs grouped by the
factor's value, and the jobs that differ only in that factor compared one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from posegnn.figures import bar_chart, loss_curves, save_figure
from posegnn.io import atomic_write
from posegnn.report.compare import (
    BEST_VAL_LOSS,
    CONV,
    FACTORS,
    LR,
    NORMALIZATION,
    OPTIMIZER,
    TEST_GNN_AP,
    TRAIN_LOSS,
    VAL_EDGE_ACC,
    VAL_GNN_AP,
    Factor,
    answer,
    compare,
    comparison_markdown,
    factor_value,
    fmt_num,
    fmt_value,
    primary_metric,
    short_runs,
)
from posegnn.report.curves import CurveDiagnosis, diagnose_curves, question_2
from posegnn.report.sweep import Job, load_job, load_sweep

__all__ = ["CurveDiagnosis", "Job", "build_report", "compare", "diagnose_curves", "load_job",
           "load_sweep"]


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


def figure_label(job: Job, common: Sequence[str]) -> str:
    """A job's name in figures: its number, then the overrides that set it apart, one a
    line."""
    own = [o for o in job.overrides if o not in common] or ["(defaults)"]
    return "\n".join([f"#{job.name}", *own])


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
                 fmt_num(best) + (f" ({at})" if at is not None else ""),
                 fmt_num(j.last("val/loss")), fmt_num(j.last("val/edge_acc")),
                 fmt_num(j.last("train/loss")), fmt_num(j.metric("test/gnn/edge_acc")),
                 fmt_num(j.metric("test/gnn/AP")), fmt_num(j.metric("test/ae/AP")),
                 fmt_num(j.metric("test/oracle/AP")),
                 *[fmt_num(j.metric(f"test/gnn/{k}")) for k in extra],
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
        cells = [fmt_num(j.metric(f"test/{g}/{k}")) for g in groupings for k in keys]
        lines.append(f"| #{j.name} `{_cell(labels[j.name], 60)}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _factor_figure(jobs: Sequence[Job], factor: Factor | None, common: Sequence[str],
                   path: Path, title: str) -> Path | None:
    with_curves = [j for j in jobs if j.curves]
    if not with_curves:
        return None
    names = {j.name: figure_label(j, common) for j in with_curves}
    curves = {names[j.name]: j.curves for j in with_curves}
    groups = None
    if factor is not None:
        groups = {names[j.name]: fmt_value(factor_value(j, factor)) for j in with_curves}
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
        ap = {figure_label(j, common): {g: j.metric(f"test/{g}/AP")
                                        for g in ("gnn", "ae", "oracle")
                                        if j.metric(f"test/{g}/AP") is not None}
              for j in jobs if j.ok}
        save_figure(bar_chart(ap, "test AP", "Test AP per job and grouping"),
                    out / "test_ap.png")
        md += ["![test AP per job](test_ap.png)", ""]

    figures: dict[str, str] = {}
    only = swept[0] if len(swept) == 1 else None
    if _factor_figure(jobs, only, common, out / "loss_curves.png", "Loss per epoch"):
        figures["all"] = "loss_curves.png"
        md += ["## Loss curves", "", "![loss curves](loss_curves.png)", ""]
    for f in swept:
        name = f"loss_curves_{f.leaf.replace('.', '_')}.png"
        if _factor_figure(jobs, f, common, out / name, f"Loss per epoch by {f.leaf}"):
            figures[f.name] = name

    md += ["## Questions of the report", ""]
    specs = [
        (QUESTIONS[0], NORMALIZATION,
         [TEST_GNN_AP, VAL_GNN_AP, BEST_VAL_LOSS, VAL_EDGE_ACC], {}),
        (QUESTIONS[2], CONV,
         [TEST_GNN_AP, VAL_GNN_AP, TRAIN_LOSS, BEST_VAL_LOSS, VAL_EDGE_ACC], CONV_NAMES),
        (QUESTIONS[3], OPTIMIZER,
         [TEST_GNN_AP, VAL_GNN_AP, BEST_VAL_LOSS, TRAIN_LOSS, VAL_EDGE_ACC], {}),
    ]
    short = short_runs(jobs)
    if short is not None:
        md[md.index("## Jobs"):md.index("## Jobs")] = [
            f"**Too short to tell:** the longest completed job ran {short} epoch(s); "
            "answers below say which value leads, not which is better.", ""]
    sections: dict[str, list[str]] = {}
    for heading, factor, metrics, names in specs:
        body, verdicts = comparison_markdown(jobs, factor, metrics, names)
        text = [f"### {heading}", "", body, ""]
        if verdicts:
            loss = TRAIN_LOSS.label if factor is CONV else BEST_VAL_LOSS.label
            text += [answer(verdicts, names, primary_metric(verdicts, loss), short), ""]
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
    """The best job of each value (highest test AP, or lowest best val loss without AP),
    with its learning rate: a fair Adam vs SGD comparison takes each at its own best
    learning rate."""
    by_ap = any(j.metric("test/gnn/AP") is not None for j in jobs if j.ok)
    parts = []
    for value in sorted({factor_value(j, factor) for j in jobs if j.ok} - {None}, key=str):
        mine = [j for j in jobs if j.ok and factor_value(j, factor) == value]
        if by_ap:
            cands = [(-j.metric("test/gnn/AP"), j) for j in mine
                     if j.metric("test/gnn/AP") is not None]
        else:
            cands = [(j.best_val_loss()[0], j) for j in mine if j.best_val_loss()[0] is not None]
        if cands:
            _, j = min(cands, key=lambda c: c[0])
            parts.append(f"`{value}` at its best: #{j.name} (lr "
                         f"{fmt_value(factor_value(j, LR))}), test gnn AP "
                         f"{fmt_num(j.metric('test/gnn/AP'))}, best val loss "
                         f"{fmt_num(j.best_val_loss()[0])}")
    judge = "test gnn AP" if by_ap else "best val loss"
    return f"Each at its best learning rate (by {judge}): " + "; ".join(parts) + "."
