"""Training throughput (graphs/s) and peak memory per model variant, on synthetic graphs.

    python benchmarks/bench_train.py --images 200 --epochs 2
    python benchmarks/bench_train.py --epoch-images 1000     # time per epoch for 1,000 images
    PYTHONPATH=../posegnn-before python benchmarks/bench_train.py --variants default  # old code

``default`` is the default model (``model=posegnn``: edgeconv_attr messages, pair
attributes in the classifier) with the default graph settings; the other variants change
only the convolution.

Graph building is timed apart from training (it is cached once built). Peak memory is
the process's maximum resident set size after each variant (it only grows), and the
growth each variant adds. Throughput is given by the elapsed time and by the process's
CPU time (steadier when other jobs share the cores; with one torch thread and no loader
workers the CPU time is the training's).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from posegnn.data.datamodule import DataConfig, PoseGraphDataModule, SyntheticSplits
from posegnn.data.graph import GraphConfig
from posegnn.models.module import PosegnnModule
from posegnn.models.network import CONVS


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def datamodule(root: Path, images: int, batch_size: int) -> tuple[PoseGraphDataModule, float]:
    data = DataConfig(root=str(root / "data"), cache_dir=str(root / "cache"),
                      batch_size=batch_size,
                      synthetic=SyntheticSplits(num_train=images, num_val=4, num_test=4))
    dm = PoseGraphDataModule(data, GraphConfig(), progress=False)
    dm._synthetic_dir("train")  # generate first: not part of the graph-building time
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    return dm, (time.perf_counter() - start) / images


DEFAULT_MODEL = {"conv": "edgeconv_attr", "classifier_edge_attr": True}  # model=posegnn
VARIANTS = ("default", *CONVS)


def fit_seconds(dm: PoseGraphDataModule, conv: str, epochs: int
                ) -> tuple[float, float, int]:
    """Elapsed and CPU seconds of ``trainer.fit``, and the model's parameter count."""
    in_dim, edge_dim = dm.dims()
    model = DEFAULT_MODEL if conv == "default" else {"conv": conv}
    module = PosegnnModule(in_dim, edge_dim, model=model)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    params = sum(p.numel() for p in module.parameters())
    return time.perf_counter() - start, time.process_time() - cpu, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="training images per variant run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--epoch-images", type=int, default=0,
                    help="also time one edgeconv epoch over this many images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        dm, build = datamodule(Path(tmp), args.images, args.batch_size)
        # posegnn-train's statistics pass over the training graphs, before fitting: where
        # the training loader's kept edges are built (code with data.keep_train_edges)
        start = time.perf_counter()
        train = dm.train_dataset() if hasattr(dm, "train_dataset") else dm.dataset("train")
        pairs = sum(g.pair_index.shape[1] for g in train)
        edges = (time.perf_counter() - start) / args.images
        import posegnn
        print(f"code: {Path(posegnn.__file__).parent}")
        print(f"{args.images} mixed-crowd images: graph building {1000 * build:.1f} ms/image, "
              f"then one pass adding edges {1000 * edges:.1f} ms/image, "
              f"{pairs / args.images:.0f} scored pairs/image, threads={args.threads}")
        print(f"{'variant':<14} {'params':>8} {'graphs/s':>9} {'graphs/CPU-s':>13} "
              f"{'peak RSS MiB':>13} {'+MiB':>6}")
        for conv in args.variants:
            before = peak_rss_mib()
            seconds, cpu, params = fit_seconds(dm, conv, args.epochs)
            graphs = args.images * args.epochs
            print(f"{conv:<14} {params:>8} {graphs / seconds:>9.1f} {graphs / cpu:>13.1f} "
                  f"{peak_rss_mib():>13.0f} {peak_rss_mib() - before:>6.0f}")
        if args.epoch_images:
            dm, build = datamodule(Path(tmp) / "epoch", args.epoch_images, args.batch_size)
            seconds, _, _ = fit_seconds(dm, "edgeconv", 1)
            print(f"one edgeconv epoch over {args.epoch_images} images: {seconds:.1f} s "
                  f"(graph building once: {build * args.epoch_images:.0f} s)")


if __name__ == "__main__":
    main()
