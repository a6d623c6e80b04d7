"""``posegnn-detector train|write``: the learned-detector world's network.

    posegnn-detector train --out detector.pt [--poses crowdpose_val.json] [--steps N]
    posegnn-detector write --out DIR [--weights detector.pt] [--poses FILE] [--images test]

Every option is a field of :class:`~posegnn.data.learned_detector.train.DetectorConfig`
(train) or :class:`~posegnn.data.learned_detector.write.WriteConfig` (write), with its
default there.
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields

from posegnn.cli.common import user_errors


def _add_options(parser: argparse.ArgumentParser, schema: type) -> None:
    """One ``--name`` option per dataclass field, typed as the field is."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        kind = hints[f.name]
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        parser.add_argument(flag, type=base, default=default,
                            help=f"(default: {default})")


def main(argv: Sequence[str] | None = None) -> int:
    from posegnn.data.learned_detector.train import DetectorConfig, train_detector
    from posegnn.data.learned_detector.write import WriteConfig, write_dataset

    parser = argparse.ArgumentParser(prog="posegnn-detector", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the detector on rendered people")
    train.add_argument("--out", required=True, help="where the weights go (a .pt file)")
    _add_options(train, DetectorConfig)
    write = sub.add_parser("write", help="write a pose-maps dataset of its outputs")
    _add_options(write, WriteConfig)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with user_errors(f"posegnn-detector {command}"):
        if command == "train":
            out = args.pop("out")
            _, stats = train_detector(DetectorConfig(**args), out)
            print(f"wrote {out} (heat {stats['heat_loss']:.5f}, pull {stats['pull']:.4f}, "
                  f"push {stats['push']:.4f}, {stats['train_s']:.0f} s)")
        else:
            out = write_dataset(WriteConfig(**args))
            print(f"wrote {args['num_images']} images to {out}; check it with posegnn-check {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
