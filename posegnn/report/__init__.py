"""``posegnn-report``: read a multirun folder and answer the report's questions from it.

Every job folder of a sweep (``<sweep>/<job_num>/``) holds ``job_status.json``,
``metrics.json``, ``csv/metrics.csv`` and ``.hydra/{config,overrides}.yaml``.
:func:`build_report` reads them all, writes ``report.md`` with a table of every job
(failed jobs marked, with their error), loss curves, and one section per question (those
in the jobs' config, else the seed report's in ``conf/sweep/seed_questions.yaml``), each
answered from the numbers: means of the jobs grouped by the factor's value, and the jobs
that differ only in that factor compared one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from posegnn.choices import one_of, typed
from posegnn.config import CONF_DIR, QuestionConfig
from posegnn.figures import bar_chart, loss_curves, save_figure
from posegnn.io import atomic_write
from posegnn.report.compare import (
    METRICS,
    answer,
    compare,
    comparison_markdown,
    fmt_num,
    fmt_value,
    md_table,
    short_runs,
)
from posegnn.report.curves import CurveDiagnosis, curves_answer, diagnose_curves
from posegnn.report.sweep import Job, load_job, load_sweep

__all__ = ["CurveDiagnosis", "Job", "build_report", "compare", "diagnose_curves", "load_job",
           "load_sweep", "sweep_questions"]

SEED_QUESTIONS = Path(CONF_DIR) / "sweep" / "seed_questions.yaml"


def sweep_questions(jobs: Sequence[Job]) -> list[QuestionConfig]:
    """The questions a sweep's jobs were run for (``questions`` in their config), or the
    seed report's (``conf/sweep/seed_questions.yaml``) for a sweep without any."""
    configs = (j.path / ".hydra" / "config.yaml" for j in jobs)
    found = next((q for path in configs
                  if path.is_file() and (q := OmegaConf.load(path).get("questions"))), None)
    questions = [typed(QuestionConfig, q)
                 for q in found or OmegaConf.load(SEED_QUESTIONS).questions]
    for i, q in enumerate(questions):
        for m in q.metrics:
            one_of(f"questions[{i}].metrics", m, METRICS)
    return questions


def own_overrides(jobs: Sequence[Job]) -> tuple[dict[str, list[str]], list[str]]:
    """Each job's overrides that not every job shares ("(defaults)" without any), and the
    shared ones."""
    common = [o for o in jobs[0].overrides if all(o in j.overrides for j in jobs)] \
        if len(jobs) > 1 else []
    return {j.name: [o for o in j.overrides if o not in common] or ["(defaults)"]
            for j in jobs}, common


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def jobs_table(jobs: Sequence[Job], labels: dict[str, str]) -> str:
    extra = [k for k in ("AP50", "AP75", "AP_hard")
             if any(j.metric(f"test/gnn/{k}") is not None for j in jobs)]
    head = ["job", "overrides", "status", "best val loss (epoch)", "last val loss",
            "val edge acc", "final train loss", "test edge acc", "gnn AP", "ae AP",
            "oracle AP", *[f"gnn {k}" for k in extra], "epochs", "fit s"]
    rows = []
    for j in jobs:
        best, at = j.best_val_loss()
        status = "completed" if j.ok else f"**{j.status.upper()}**"
        if j.error:
            status += f": {_cell(j.error, 100)}"
        fit = j.metric("time/fit_s")
        rows.append([f"#{j.name}", f"`{labels[j.name]}`", status,
                     fmt_num(best) + (f" ({at})" if at is not None else ""),
                     fmt_num(j.last("val/loss")), fmt_num(j.last("val/edge_acc")),
                     fmt_num(j.last("train/loss")),
                     *[fmt_num(j.metric(f"test/{k}"))
                       for k in ("gnn/edge_acc", "gnn/AP", "ae/AP", "oracle/AP")],
                     *[fmt_num(j.metric(f"test/gnn/{k}")) for k in extra],
                     str(j.epochs() if j.epochs() is not None else "-"),
                     f"{fit:.1f}" if fit is not None else "-"])
    return md_table(head, rows)


def ap_table(jobs: Sequence[Job], labels: dict[str, str]) -> str | None:
    """Test OKS AP of every grouping, one row per completed job."""
    keys = ("AP", "AP50", "AP75", "AP_hard")
    groupings = [g for g in ("gnn", "ae", "oracle")
                 if any(j.metric(f"test/{g}/AP") is not None for j in jobs)]
    done = [j for j in jobs if j.ok and any(j.metric(f"test/{g}/AP") is not None
                                            for g in groupings)]
    if not done:
        return None
    return md_table(["job", *[f"{g} {k}" for g in groupings for k in keys]],
                    [[f"#{j.name} `{_cell(labels[j.name], 60)}`",
                      *[fmt_num(j.metric(f"test/{g}/{k}")) for g in groupings for k in keys]]
                     for j in done])


def _factor_figure(jobs: Sequence[Job], leaf: str | None, names: dict[str, str],
                   path: Path, title: str) -> Path | None:
    with_curves = [j for j in jobs if j.curves]
    if not with_curves:
        return None
    groups = None if leaf is None else {names[j.name]: fmt_value(j.config.get(leaf))
                                        for j in with_curves}
    return save_figure(loss_curves({names[j.name]: j.curves for j in with_curves},
                                   groups=groups, group_name=leaf, title=title), path)


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for the multirun folder ``sweep_dir``
    (into ``out_dir``, by default ``sweep_dir`` itself); returns the report's path."""
    sweep_dir = Path(sweep_dir)
    jobs = load_sweep(sweep_dir)
    questions = sweep_questions(jobs)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    own, common = own_overrides(jobs)
    labels = {name: ",".join(o) for name, o in own.items()}
    # in figures: the job's number, then the overrides that set it apart, one a line
    names = {name: "\n".join([f"#{name}", *o]) for name, o in own.items()}
    swept = [leaf for leaf in dict.fromkeys(q.factor for q in questions)
             if len({repr(j.config.get(leaf)) for j in jobs if j.ok}) > 1]
    failed = [j for j in jobs if not j.ok]
    short = short_runs(jobs)

    md = [f"# Sweep report: {sweep_dir.name}", "",
          f"`{sweep_dir}`: {len(jobs)} jobs, {len(jobs) - len(failed)} completed, "
          f"{len(failed)} failed or incomplete."]
    if common:
        md.append(f"Overrides shared by every job: `{' '.join(common)}`.")
    md += ["Swept factors (from each job's resolved config): "
           + (", ".join(f"`{leaf}`" for leaf in swept) or "none of the questions'") + ".", ""]
    if short is not None:
        md += [f"**Too short to tell:** the longest completed job ran {short} epoch(s); "
               "answers below say which value leads, not which is better.", ""]
    md += ["## Jobs", "", jobs_table(jobs, labels), ""]
    if failed:
        md.append("Failed or incomplete jobs (their folders hold the log):")
        md += [f"- #{j.name} `{labels[j.name]}`: {j.status}: {j.error or 'no error recorded'}"
               for j in failed]
        md.append("")
    table = ap_table(jobs, labels)
    if table:
        md += ["## Test AP of every grouping (OKS)", "", table, ""]
        ap = {names[j.name]: {g: j.metric(f"test/{g}/AP") for g in ("gnn", "ae", "oracle")
                              if j.metric(f"test/{g}/AP") is not None}
              for j in jobs if j.ok}
        save_figure(bar_chart(ap, "test AP", "Test AP per job and grouping"),
                    out / "test_ap.png")
        md += ["![test AP per job](test_ap.png)", ""]

    only = swept[0] if len(swept) == 1 else None
    if _factor_figure(jobs, only, names, out / "loss_curves.png", "Loss per epoch"):
        md += ["## Loss curves", "", "![loss curves](loss_curves.png)", ""]
    figures = {leaf: f"loss_curves_{leaf.replace('.', '_')}.png" for leaf in swept}
    figures = {leaf: name for leaf, name in figures.items() if _factor_figure(
        jobs, leaf, names, out / name, f"Loss per epoch by {leaf}")}

    md += ["## Questions of the report", ""]
    for q in questions:
        md += [f"### {q.title}", ""]
        if q.curves:
            md += [curves_answer(jobs, labels, q.factor), ""]
        else:
            body, verdicts = comparison_markdown(jobs, q)
            md += [body, ""]
            if verdicts:
                md += [answer(verdicts, q.names, short), ""]
                if q.best_of_each:
                    md += [_best_of_each(jobs, q), ""]
        if q.factor in figures:
            md += [f"![loss by {q.factor}]({figures[q.factor]})", ""]
    md += ["---", "Means are over the completed jobs with each value; a *matched setting* is "
           "a set of jobs equal in every other varying config value. Lower is better for "
           "losses, higher for accuracy and AP. A winner is called *clear* when it wins in "
           "at least 3/4 of the matched settings; with few jobs per setting, check the "
           "spread in the tables before trusting a small difference.", ""]
    report = out / "report.md"
    text = "\n".join(md)
    atomic_write(report, lambda f: f.write(text.encode()))
    return report


def _best_of_each(jobs: Sequence[Job], q: QuestionConfig) -> str:
    """The best job of each value (highest test AP, or lowest best val loss without AP),
    with its ``keeps`` settings (each value at its own best learning rate)."""
    by_ap = any(j.metric("test/gnn/AP") is not None for j in jobs if j.ok)
    judge = "test gnn AP" if by_ap else "best val loss"
    score = (lambda j: -j.metric("test/gnn/AP")) if by_ap else lambda j: j.best_val_loss()[0]
    kept = [k.rsplit(".", 1)[-1] for k in q.keeps]
    parts = []
    for value in sorted({j.config.get(q.factor) for j in jobs if j.ok} - {None}, key=str):
        mine = [j for j in jobs if j.ok and j.config.get(q.factor) == value
                and METRICS[judge].get(j) is not None]
        if mine:
            j = min(mine, key=score)
            setting = ", ".join(f"{name} {fmt_value(j.config.get(k))}"
                                for name, k in zip(kept, q.keeps, strict=True))
            parts.append(f"`{value}` at its best: #{j.name} ({setting}), test gnn AP "
                         f"{fmt_num(j.metric('test/gnn/AP'))}, best val loss "
                         f"{fmt_num(j.best_val_loss()[0])}")
    return (f"Each at its best {', '.join(kept) or 'job'} (by {judge}): " + "; ".join(parts)
            + ".")
