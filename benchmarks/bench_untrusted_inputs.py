"""What refusing untrusted files costs: a decompression bomb, and the safe graph cache.

    python benchmarks/bench_untrusted_inputs.py --images 1000

1. Writes a 14x8192x8192 (heatmaps) + 14x4096x4096 (tags) float16 npz of zeros, a few
   megabytes on disk, and times ``read_maps`` refusing it, with the process's peak memory.
2. On a generated dataset, times reading one image's maps and, within that, checking
   its npz headers.
3. Builds the vertex graphs of that dataset and compares loading them from the
   weights-only cache (plain tensors) with a full-unpickling ``torch.save`` of the same
   ``Data`` list (the format before), and the files' sizes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from posegnn.data.cache import build_graphs, load_graphs, pack_graphs
from posegnn.data.graph import GraphConfig
from posegnn.data.maps import DatasetError, PoseMapsDataset, npz_headers, read_maps
from posegnn.data.synthetic import SyntheticConfig, generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/
from tests.faults import write_bomb  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_bomb(tmp: Path) -> None:
    path = tmp / "1.npz"
    write_bomb(path, (14, 8192, 8192), (14, 4096, 4096))
    before = peak_rss_mib()
    start = time.perf_counter()
    try:
        read_maps(path, {"id": 1, "width": 512, "height": 512}, 14)
        outcome = "accepted"
    except DatasetError as err:
        outcome = f"refused: {err}"
    elapsed = time.perf_counter() - start
    print(f"bomb: {path.stat().st_size / 2**20:.1f} MiB on disk, "
          f"{2 * (14 * 8192**2 + 14 * 4096**2) / 2**30:.1f} GiB decompressed")
    print(f"  {outcome}")
    print(f"  in {elapsed * 1e3:.1f} ms; peak RSS {before:.0f} MiB before, "
          f"{peak_rss_mib():.0f} MiB after")


def bench_cache(tmp: Path, images: int) -> None:
    ds = PoseMapsDataset(generate_dataset(tmp / "data", SyntheticConfig(num_images=images),
                                          progress=False))
    for name, read in (("load_maps (headers, decompression, checks)", ds.load_maps),
                       ("of which the header check", lambda i: npz_headers(ds.maps_path(i)))):
        start = time.perf_counter()
        for image_id in ds.image_ids:
            read(image_id)
        per_image = (time.perf_counter() - start) / len(ds.image_ids)
        print(f"{name}: {per_image * 1e3:.2f} ms per image")
    graphs = build_graphs(ds, ds.image_ids, GraphConfig(), progress=False)
    safe, pickled = tmp / "safe.pt", tmp / "pickled.pt"
    torch.save(pack_graphs(graphs), safe)
    torch.save({"graphs": graphs}, pickled)
    for name, path, load in (
            ("weights-only, plain tensors", safe, lambda: load_graphs(safe)),
            ("full unpickling of Data objects", pickled,
             lambda: torch.load(pickled, weights_only=False)["graphs"])):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            load()
            times.append(time.perf_counter() - start)
        print(f"cache, {name}: {path.stat().st_size / 2**20:.1f} MiB for {len(graphs)} graphs, "
              f"loaded in {min(times):.3f}-{max(times):.3f} s (3 runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bench_bomb(Path(tmp))
        bench_cache(Path(tmp), args.images)


if __name__ == "__main__":
    main()
