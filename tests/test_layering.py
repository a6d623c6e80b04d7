"""The layers point one way: what each part of the library loads when imported alone."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = ["posegnn.data.maps", "posegnn.data.candidates", "posegnn.data.graph",
        "posegnn.data.cache", "posegnn.models.module", "posegnn.grouping",
        "posegnn.grouping.refine", "posegnn.evaluation", "posegnn.evaluation.runner",
        "posegnn.checkpoints"]


def loaded_after(*modules: str) -> set[str]:
    """The posegnn modules a fresh interpreter holds after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('posegnn'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return set(json.loads(run.stdout.splitlines()[-1]))


def under(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_the_core_imports_neither_the_synthetic_world_nor_the_commands():
    loaded = loaded_after(*CORE)
    assert "posegnn.evaluation.runner" in loaded  # the probe did import the core
    assert under(loaded, "posegnn.data.synthetic", "posegnn.report", "posegnn.callbacks",
                 "posegnn.tasks", "posegnn.cli", "posegnn.data.datamodule") == []


def test_models_import_neither_grouping_nor_evaluation():
    loaded = loaded_after("posegnn.models.module")
    assert "posegnn.models.person_scorer" in loaded
    assert under(loaded, "posegnn.grouping", "posegnn.evaluation") == []
