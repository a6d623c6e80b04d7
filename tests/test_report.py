"""posegnn-report: a real two-job multirun in, report.md and PNGs out; failed jobs kept."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from posegnn.choices import SettingError
from posegnn.cli.report import main as report_main
from posegnn.report import build_report, diagnose_curves, load_sweep, sweep_questions

# the seed report's questions (conf/sweep/seed_questions.yaml): a sweep whose jobs name none
QUESTIONS = [q.title for q in sweep_questions([])]
ENV = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``posegnn-train -m ... optimizer=adam,sgd``: the multirun folder of two jobs (at a
    constant learning rate: in two epochs the default's warm-up would leave both jobs at
    the same training loss, and the report nothing to tell apart)."""
    out = tmp_path_factory.mktemp("sweep")
    exe = Path(sys.executable).with_name("posegnn-train")
    args = ["-m", f"paths.output_dir={out}", "data.synthetic.num_train=12",
            "data.synthetic.num_val=6", "data.synthetic.num_test=6", "trainer.max_epochs=2",
            "optimizer=adam,sgd", "scheduler=none", "progress=false",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "callbacks.val_ap_every_n_epochs=0"]
    proc = subprocess.run([str(exe), *args], cwd=out, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = list((out / "multirun").iterdir())
    return sweep_dir


def test_report_of_a_real_sweep(sweep, tmp_path):
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").is_file()
    report = build_report(sweep, tmp_path / "report")
    text = report.read_text()
    assert report == tmp_path / "report" / "report.md"
    assert "optimizer=adam" in text and "optimizer=sgd" in text
    assert "| #0 |" in text and "| #1 |" in text
    for heading in QUESTIONS:
        assert f"### {heading}" in text
    # the two jobs differ only in the optimizer: question 4 compares them one to one
    q4 = text.split(f"### {QUESTIONS[3]}")[1]
    assert "1 settings that differ only in `optimizer.name`" in q4
    assert "`optimizer.lr`, which follows" in q4
    assert "**Answer:**" in q4
    for other in (QUESTIONS[0], QUESTIONS[2]):
        assert "**Not swept**" in text.split(f"### {other}")[1].split("###")[0]
    pngs = {p.name for p in (tmp_path / "report").glob("*.png")}
    assert {"loss_curves.png", "loss_curves_optimizer_name.png", "test_ap.png"} <= pngs
    assert all((tmp_path / "report" / p).stat().st_size > 1000 for p in pngs)
    assert "(loss_curves.png)" in text
    jobs = load_sweep(sweep)
    assert [j.status for j in jobs] == ["completed", "completed"]
    assert jobs[0].curves["epoch"] == [0.0, 1.0]  # test row and lr rows left out
    assert {j.config["optimizer.name"] for j in jobs} == {"adam", "sgd"}


def test_failed_job_is_marked_not_dropped(sweep, tmp_path, capsys):
    """A copy of the sweep with a third job that failed (status file, no metrics)."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "*.ckpt"))
    failed = copy / "2"
    shutil.copytree(copy / "1", failed)
    (failed / "metrics.json").unlink()
    (failed / "csv" / "metrics.csv").unlink()
    status = json.loads((failed / "job_status.json").read_text())
    status.update(status="failed", job_num=2,
                  error="ValueError: graph.normalization must be none|per_map|dataset")
    status["overrides"] = [o.replace("optimizer=sgd", "optimizer=adamw")
                           for o in status["overrides"]]
    (failed / "job_status.json").write_text(json.dumps(status))
    (copy / "3").mkdir()  # a job killed before it wrote anything but its config
    shutil.copytree(copy / "1" / ".hydra", copy / "3" / ".hydra")

    assert report_main([str(copy)]) == 0
    assert capsys.readouterr().out.strip() == str(copy / "report.md")
    text = (copy / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| #2 |"))
    assert "**FAILED**" in row and "ValueError" in row
    killed = next(line for line in text.splitlines() if line.startswith("| #3 |"))
    assert "**UNKNOWN**" in killed
    assert "2 failed or incomplete" in text
    # the failed job stays out of the comparisons
    q4 = text.split(f"### {QUESTIONS[3]}")[1]
    assert "#2" not in q4.split("**Answer:**")[0]


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert report_main([str(tmp_path)]) == 2
    assert "no job folders" in capsys.readouterr().err


@pytest.mark.parametrize(("train", "val", "pattern"), [
    ([0.7, 0.5, 0.4, 0.3, 0.2, 0.15], [0.7, 0.5, 0.45, 0.5, 0.6, 0.7], "overfitting"),
    ([0.7, 0.5, 0.6, 0.45, 0.65, 0.5], [0.7, 0.6, 0.65, 0.6, 0.7, 0.6], "lr too high"),
    ([0.5, 0.4, 0.45, 0.55, 0.7, 0.9], [0.5, 0.45, 0.5, 0.6, 0.8, 1.0], "lr too high"),
    ([0.7, 0.5, 0.4, 0.35, 0.33, 0.32], [0.7, 0.55, 0.5, 0.47, 0.46, 0.46], "neither"),
    ([0.7, 0.5], [0.7, 0.6], "too short to tell"),
])
def test_curve_patterns(train, val, pattern):
    assert diagnose_curves(train, val).pattern == pattern


def test_curve_patterns_tolerate_missing_epochs():
    nan = math.nan
    d = diagnose_curves([0.7, 0.5, 0.4, 0.3, 0.2, 0.1], [0.6, nan, 0.4, nan, 0.5, 0.6])
    assert d.pattern == "overfitting" and "epoch 2" in d.detail


def test_short_runs_are_called_too_short_and_judged_by_ap(sweep, tmp_path, monkeypatch):
    import posegnn.report as report

    drawn = {}
    real_bar_chart = report.bar_chart
    monkeypatch.setattr(report, "bar_chart", lambda values, *a, **k: drawn.setdefault(
        "bars", list(values)) and real_bar_chart(values, *a, **k))
    text = build_report(sweep, tmp_path / "short").read_text()
    assert "**Too short to tell:** the longest completed job ran 2 epoch(s)" in text
    answer_4 = text.split(f"### {QUESTIONS[3]}")[1].split("**Answer:**")[1].split("\n")[0]
    assert answer_4.startswith(" too short to tell: the jobs ran 2 epoch(s)")
    assert "leads on test gnn AP" in answer_4
    # bars are named by the overrides that set each job apart, not by its number alone
    assert [b.replace("\n", " ") for b in drawn["bars"]] == ["#0 optimizer=adam",
                                                             "#1 optimizer=sgd"]


def test_the_answer_follows_ap_when_the_loss_disagrees(sweep, tmp_path):
    """As in the issue: one job has the lower val loss, the other the higher AP."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "*.ckpt"))
    jobs = load_sweep(copy)
    worse_loss = max(jobs, key=lambda j: j.best_val_loss()[0])
    for j in jobs:
        metrics = json.loads((copy / j.name / "metrics.json").read_text())
        metrics["epochs"] = 8  # long enough to tell
        metrics["test/gnn/AP"] = 0.48 if j is worse_loss else 0.10
        (copy / j.name / "metrics.json").write_text(json.dumps(metrics))
    text = build_report(copy).read_text()
    winner = worse_loss.config["optimizer.name"]
    q4 = text.split(f"### {QUESTIONS[3]}")[1]
    answer_4 = q4.split("**Answer:**")[1].split("\n")[0]
    assert answer_4.startswith(f" `{winner}` is better on test gnn AP"), answer_4
    against = [part for part in answer_4.split(";") if "favour another value" in part]
    assert against and "best val loss" in against[0]
    assert "Too short to tell" not in text
    assert "by test gnn AP): `adam` at its best" in q4


def test_a_sweep_answers_the_questions_its_jobs_were_run_for(sweep, tmp_path):
    """Questions in the jobs' config (as ``sweep=seed_questions`` puts them there) replace
    the seed report's; a metric the report does not know is refused, naming those it
    does."""
    assert len(QUESTIONS) == 4 and QUESTIONS[3] == "4. Adam or SGD?"
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("checkpoints", "*.ckpt"))

    def ask(question: dict) -> None:
        for config in copy.glob("*/.hydra/config.yaml"):
            cfg = OmegaConf.load(config)
            cfg.questions = [question]
            OmegaConf.save(cfg, config)

    ask({"title": "Which optimizer fits the train split?", "factor": "optimizer.name",
         "owns": ["optimizer"], "keeps": ["optimizer.lr"], "metrics": ["final train loss"]})
    text = build_report(copy).read_text()
    assert not any(q in text for q in QUESTIONS)
    mine = text.split("### Which optimizer fits the train split?")[1]
    assert "| `optimizer.name` | jobs | mean final train loss |" in mine
    assert "best val loss" not in mine.split("---")[0]
    assert "leads on final train loss" in mine
    ask({"title": "?", "factor": "optimizer.name", "metrics": ["val AP"]})
    with pytest.raises(SettingError, match=r"questions\[0\].metrics='val AP' is not one of: "
                                           "best val loss, final train loss"):
        build_report(copy)
