"""``posegnn-check DIR``: is this pose-maps dataset readable, and what does it hold?"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from posegnn.cli.common import full_traceback_wanted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="posegnn-check",
        description="Validate a pose-maps dataset folder (annotations.json + maps/<id>.npz): "
                    "print a summary, list every problem with its fix, exit 1 if any.")
    parser.add_argument("dataset", metavar="DIR", help="the dataset folder")
    parser.add_argument("--sigmas", default=None,
                        help="comma-separated OKS sigmas, for a layout other than "
                             "crowdpose14 or coco17")
    parser.add_argument("--traceback", action="store_true",
                        help="stop at the first problem with its full traceback "
                             "(HYDRA_FULL_ERROR=1 does the same)")
    args = parser.parse_args(argv)

    from posegnn.tasks.check import check_dataset, format_result

    sigmas = [float(s) for s in args.sigmas.split(",")] if args.sigmas else None
    result = check_dataset(args.dataset, sigmas,
                           stop_at_first=args.traceback or full_traceback_wanted())
    print(format_result(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
