"""docs/dataset_contract.md: its complete example writes a dataset that reads back and
scores AP 1.0 with the baseline and the oracle, as the page says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

DOC = REPO / "docs" / "dataset_contract.md"
EVAL = str(Path(sys.executable).with_name("posegnn-eval"))


def test_the_contract_example_writes_a_dataset_that_evaluates(tmp_path):
    text = DOC.read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    (tmp_path / "example.py").write_text(example)
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "crowdpose14 2 people" in run.stdout
    command = re.search(r"posegnn-eval (.*)\n", text).group(1).split()
    out = tmp_path / "out"
    run = subprocess.run([EVAL, *command, f"hydra.run.dir={out}", "progress=false"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WANDB_MODE": "disabled"})
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/ae/AP"] == 1.0 and metrics["test/oracle/AP"] == 1.0
