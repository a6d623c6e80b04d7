"""What the compiled kernels cost to start: the first call in a process with an empty
numba cache (compiling), the first call in a second process (loading the cache), and a
warm call, each on one image through pairs, the shipped model, gnn and ae with refine
(wall seconds, and the process's CPU seconds for the first call).

    python benchmarks/bench_compile.py

The posegnn package is copied into a read-only folder first, as an installed
site-packages is, and the cache goes where ``NUMBA_CACHE_DIR`` (a fresh temporary folder)
says; so this also shows that the cache works with a read-only package.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def worker(dataset: str) -> None:
    """Time the import, the first and a warm call of one image's pipeline; print JSON."""
    start = time.perf_counter()
    import torch

    from posegnn import kernels  # noqa: F401
    from posegnn.checkpoints import load_module
    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import AddEdges
    from posegnn.data.maps import PoseMapsDataset
    from posegnn.evaluation.runner import candidates_of
    from posegnn.grouping import build_grouping
    from posegnn.pretrained import shipped_checkpoint

    torch.set_num_threads(1)
    imported = time.perf_counter() - start
    ds = PoseMapsDataset(dataset)
    module = load_module(shipped_checkpoint(ds.layout.name))
    graphs = build_graphs(ds, ds.image_ids, module.graph_cfg, progress=False)
    edges = AddEdges(ds.layout, module.graph_cfg.edges)
    gnn = build_grouping("gnn", layout=ds.layout, scorer=module.scorer)
    ae = build_grouping("ae", layout=ds.layout)

    def image(g) -> tuple[float, float]:
        maps = ds.load_maps(int(g.image_id))
        begin, cpu = time.perf_counter(), time.process_time()
        data = edges(g)
        with torch.inference_mode():
            prob = torch.sigmoid(module.net(data)).numpy()
        cands = candidates_of(g)
        gnn.group(cands, pair_index=data.pair_index.numpy(), prob=prob, maps=maps)
        ae.group(cands, maps=maps)
        return time.perf_counter() - begin, time.process_time() - cpu

    first, first_cpu = image(graphs[0])
    warm, _ = image(graphs[1])
    print(json.dumps({"import_s": imported, "first_s": first, "first_cpu_s": first_cpu,
                      "warm_s": warm,
                      "cache_files": sum(1 for _ in Path(os.environ["NUMBA_CACHE_DIR"])
                                         .rglob("*.nbi"))}))


def read_only_copy(dest: Path) -> Path:
    """This checkout's posegnn package copied under ``dest``, every file read-only."""
    shutil.copytree(HERE / "posegnn", dest / "posegnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for path in [*dest.rglob("*"), dest]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return dest


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return
    sys.path.insert(0, str(HERE))
    from posegnn.data.synthetic import SyntheticConfig, generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate_dataset(tmp / "data", SyntheticConfig(num_images=2, seed=3),
                                progress=False)
        (tmp / "src").mkdir()
        src = read_only_copy(tmp / "src")
        env = {**os.environ, "PYTHONPATH": str(src), "NUMBA_CACHE_DIR": str(tmp / "cache"),
               "OMP_NUM_THREADS": "1"}
        runs = {}
        try:
            for label in ("empty cache (compiles)", "second process (cached)"):
                out = subprocess.run([sys.executable, __file__, "--worker", str(data)],
                                     env=env, capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"worker failed:\n{out.stderr[-3000:]}")
                runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            for path in [src, *src.rglob("*")]:  # writable again, so it can be removed
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    print("| process | import s | first image s (CPU s) | warm image s | cache index files |")
    print("|---|---|---|---|---|")
    for label, r in runs.items():
        print(f"| {label} | {r['import_s']:.2f} | {r['first_s']:.2f} ({r['first_cpu_s']:.2f}) "
              f"| {r['warm_s']:.3f} | {r['cache_files']} |")


if __name__ == "__main__":
    main()
