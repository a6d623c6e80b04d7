"""``posegnn-report SWEEP_DIR [--out DIR]``: the report of a multirun folder (report.md and
PNG figures), answering the questions the sweep was run for (by default the seed
report's, conf/sweep/seed_questions.yaml) from its numbers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="posegnn-report",
        description="Summarize a posegnn-train multirun: a table of every job (failed ones "
                    "marked), loss curves, and the questions of the sweep (by default "
                    "conf/sweep/seed_questions.yaml's) answered from the numbers.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR",
                        help="a multirun folder, e.g. outputs/multirun/2024-01-01_12-00-00")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where report.md and the PNGs go (default: SWEEP_DIR)")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error (HYDRA_FULL_ERROR=1 too)")
    args = parser.parse_args(argv)

    from posegnn.choices import SettingError
    from posegnn.cli.common import full_traceback_wanted
    from posegnn.report import build_report

    try:
        report = build_report(args.sweep_dir, args.out)
    except (FileNotFoundError, SettingError) as e:
        if args.traceback or full_traceback_wanted():
            raise
        print(f"posegnn-report: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
