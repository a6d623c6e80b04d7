"""How every Hydra command starts: ``--help`` answered from ``conf/`` alone (no torch
import, well under 2 s), overrides checked against the schema before Hydra composes
anything (a typo gets "did you mean", never Hydra's ``+key`` advice), and a failed job
leaves no empty run folder behind.

Importing this module is cheap: the schemas load only once a job really starts.
"""

from __future__ import annotations

import difflib
import functools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

PROGS = {"train": "posegnn-train", "eval": "posegnn-eval", "predict": "posegnn-predict",
         "generate": "posegnn-generate"}
# what a command is for, and the settings people change most (names only: the
# defaults live in the schemas and conf/)
ABOUT = {
    "train": ("Fit the edge classifier, then test it with every grouping (gnn, ae, oracle).",
              ["trainer.max_epochs", "data.batch_size", "optimizer.lr", "ckpt_path",
               "finetune_from", "data.train", "data.test", "seed", "logger"]),
    "eval": ("Every grouping side by side on a test split: OKS AP, AP50, AP75, AR, crowd "
             "levels.", ["ckpt_path", "data.test", "grouping.run", "grouping.ae.order",
                         "grouping.ae.tag_threshold", "grouping.gnn.threshold", "split"]),
    "predict": ("COCO keypoint results for every image of a dataset (annotations optional).",
                ["input", "out", "ckpt_path", "grouping.run", "draw", "images",
                 "draw_min_score", "batch_size"]),
    "generate": ("Write a synthetic pose-maps dataset.",
                 ["out", "num_images", "seed", "crowd", "layout", "poses", "noise.tag_dim",
                  "overwrite"]),
}
EXAMPLES = {
    "train": ["posegnn-train experiment=quickstart",
              "posegnn-train data=maps data.train=DIR data.test=DIR"],
    "eval": ["posegnn-eval data=maps data.test=DIR",
             "posegnn-eval ckpt_path=CKPT data=maps data.test=DIR grouping.run=[gnn,ae]"],
    "predict": ["posegnn-predict input=DIR out=results.json",
                "posegnn-predict input=DIR out=results.json grouping.run=[ae] draw=8"],
    "generate": ["posegnn-generate out=outputs/my_world num_images=500 crowd=hard"],
}
HELP_FLAGS = ("--help", "-h")


def conf_dir() -> Path:
    """``conf/`` without importing the schemas (the same lookup as posegnn.config)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SystemExit(f"posegnn: conf/ found neither in {here} nor in {here.parent}: "
                     "reinstall posegnn")


def used_groups(config_name: str) -> list[tuple[str, str, str]]:
    """(group folder, the key it fills, its default choice) of a primary config's
    defaults list: the groups the command uses."""
    import yaml

    doc = yaml.safe_load((conf_dir() / f"{config_name}.yaml").read_text()) or {}
    groups = []
    for entry in doc.get("defaults", []):
        if isinstance(entry, dict):
            (key, choice), = entry.items()
            group, _, package = key.partition("@")
            if group not in ("hydra",) and not group.startswith("override"):
                groups.append((group, package or group, "null" if choice is None else choice))
    return groups


def help_text(config_name: str) -> str:
    prog = PROGS[config_name]
    about, settings = ABOUT[config_name]
    lines = [f"usage: {prog} [KEY=VALUE ...] [GROUP=OPTION ...] [--multirun]", "", about]
    groups = used_groups(config_name)
    if groups:
        lines += ["", "config groups (GROUP=OPTION; default first):"]
        for group, key, choice in groups:
            options = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
            options = [choice] + [o for o in options if o != choice]
            lines.append(f"  {key:<15} {', '.join(options)}")
    lines += ["", "most used settings:"]
    row = "  "
    for name in settings:
        if len(row) + len(name) > 88:
            lines.append(row.rstrip())
            row = "  "
        row += name + "  "
    lines += [row.rstrip(), "", "examples:"]
    lines += [f"  {e}" for e in EXAMPLES[config_name]]
    lines += ["", "Every setting with its default: --cfg job. Hydra's own help: --hydra-help.",
              "Docs: README.md, docs/ (experiments, dataset_contract, real_networks)."]
    return "\n".join(lines)


# -- overrides -------------------------------------------------------------------------
def _closest(word: str, choices, prefix: str = "") -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{match[0]}?" if match else ""


def _unwrap(hint):
    """``X`` of ``X | None``; anything else as it is."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def override_problem(config_name: str, schema, key: str, value) -> str | None:
    """Why ``key`` (an override without ``+``/``~``) names no setting of the command, or
    None. ``schema`` is the primary config's dataclass; a group the command uses takes an
    option of its folder."""
    import dataclasses
    import typing

    if key.split(".")[0] == "hydra" or "/" in key:
        return None
    groups = {k: g for g, k, _ in used_groups(config_name)}
    if key in groups:
        options = sorted(p.stem for p in (conf_dir() / groups[key]).glob("*.yaml"))
        if isinstance(value, str) and value not in options and value != "null":
            return (f"{key}={value}: no such option (there are: {', '.join(options)})"
                    + _closest(value, options))
        return None
    node, path = schema, []
    for part in key.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return None  # a dict, a list or Any: anything goes below
        hints = typing.get_type_hints(node)
        if part not in hints:
            names = list(hints) + (list(groups) if not path else [])
            where = f"'{'.'.join(path)}'" if path else PROGS[config_name]
            return (f"{'.'.join(path + [part])}: {where} has no such setting"
                    + _closest(part, names, "".join(f"{p}." for p in path)))
        path.append(part)
        node = _unwrap(hints[part])
    return None


def check_overrides(config_name: str, argv: list[str]) -> str | None:
    """The first override of ``argv`` that names no setting, as one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from posegnn.config import SCHEMAS

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return None  # Hydra reports bad syntax itself
    for o in overrides:
        if o.is_add() or o.is_delete() or o.is_force_add() or o.package:
            continue
        value = o.value() if not o.is_sweep_override() else None
        problem = override_problem(config_name, SCHEMAS[config_name], o.key_or_group, value)
        if problem:
            return problem
    return None


# -- the run folder --------------------------------------------------------------------
def _only_hydra_files(folder: Path) -> bool:
    return folder.is_dir() and all(p.name == ".hydra" or p.suffix == ".log"
                                   for p in folder.iterdir())


def _drop_empty_run_folder() -> None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        return  # a sweep keeps each failed job's folder and status
    folder = Path(hc.runtime.output_dir)
    if _only_hydra_files(folder):
        shutil.rmtree(folder, ignore_errors=True)
        if folder.parent.is_dir() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()  # outputs/<command>/, made for this run alone


def launch(config_name: str, job: Callable) -> None:
    """Run ``job(cfg)`` as the Hydra app of ``conf/<config_name>.yaml``."""
    argv = sys.argv[1:]
    prog = PROGS[config_name]
    if any(a in HELP_FLAGS for a in argv):
        try:
            print(help_text(config_name))
        except BrokenPipeError:  # posegnn-eval --help | head
            pass
        return
    problem = check_overrides(config_name, argv)
    if problem:
        raise SystemExit(f"{prog}: error: {problem}")
    import hydra

    import posegnn.cli.common  # noqa: F401 - registers the schemas and resolvers

    @functools.wraps(job)
    def guarded(cfg):
        try:
            return job(cfg)
        except BaseException as err:
            if not (isinstance(err, SystemExit) and err.code in (0, None)):
                _drop_empty_run_folder()
            raise

    hydra.main(config_path=str(conf_dir()), config_name=config_name,
               version_base="1.3")(guarded)()
