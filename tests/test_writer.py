"""The writer, used as a user's dump script would use it, and posegnn-predict's drawings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from posegnn import api
from posegnn.data.maps import DatasetError, PoseMapsDataset
from posegnn.tasks.evaluate import evaluate
from posegnn.tasks.predict import predict
from posegnn.writer import PoseMapsWriter, affine_from_center_scale

DOC = Path(__file__).resolve().parents[1] / "docs" / "real_networks.md"
PAD = 16  # heatmap pixels of padding on every side, as a network input padded to a multiple


def dump_like_a_user(source: Path, out: Path) -> Path:
    """What a dump script does: run "the network" (here: the source's maps, on an input
    padded on every side, as HigherHRNet pads to a multiple of 64) and describe the
    input region by its center and scale."""
    ds = PoseMapsDataset(source)
    with PoseMapsWriter(out, layout=ds.layout.name) as writer:
        for image_id in ds.image_ids:
            maps = ds.load_maps(image_id)
            k, h, w = maps.heatmaps.shape
            stride = int(round(maps.tag_stride[0]))
            heat = np.pad(maps.heatmaps, ((0, 0), (PAD, PAD), (PAD, PAD)))
            tags = np.pad(maps.tags[..., 0], ((0, 0), (PAD // stride,) * 2, (PAD // stride,) * 2))
            sx, sy = maps.map_to_image[0, 0], maps.map_to_image[1, 1]
            center = maps.heatmap_to_image(np.array([[w / 2, h / 2]]))[0]
            scale = (sx * (w + 2 * PAD), sy * (h + 2 * PAD))
            info = ds.image(image_id)
            writer.add(image_id, heat, tags, info["width"], info["height"],
                       file_name=info["file_name"], crowd_index=info.get("crowd_index"),
                       map_to_image=affine_from_center_scale(center, scale, heat.shape[:0:-1]),
                       people=ds.annotations_of(image_id))
    return out


def ae_and_oracle(dataset: Path, out: Path) -> dict[str, float]:
    cfg = api.settings("eval", ["data=maps", f"data.test={dataset}", "grouping.run=[ae,oracle]",
                               f"paths.output_dir={out}", "progress=false"])
    return evaluate(cfg, out / "eval")


def test_a_dataset_dumped_with_the_writer_evaluates_like_its_source(clean_dataset, tmp_path):
    written = dump_like_a_user(clean_dataset, tmp_path / "dumped")
    ds = PoseMapsDataset(written)
    assert ds.load_maps(ds.image_ids[0]).heatmaps.shape[1:] == (256 + 2 * PAD, 256 + 2 * PAD)
    before = ae_and_oracle(clean_dataset, tmp_path / "source_eval")
    after = ae_and_oracle(written, tmp_path / "dumped_eval")
    for key in ("test/ae/AP", "test/ae/AP75", "test/oracle/AP", "test/oracle/AR"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    assert before["test/oracle/AP"] > 0.9  # noiseless maps: the check can fail

    # docs/real_networks.md: the same AP from the results file with plain pycocotools
    (recipe,) = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
                 if "COCOeval" in b]
    recipe = re.sub(r"^dataset_dir, results_file = .*$",
                    f"dataset_dir, results_file = {str(written)!r}, "
                    f"{str(tmp_path / 'dumped_eval' / 'eval' / 'test_ae_results.json')!r}",
                    recipe, flags=re.M)
    namespace: dict = {}
    exec(compile(recipe, str(DOC), "exec"), namespace)  # noqa: S102
    assert namespace["ap"] == pytest.approx(after["test/ae/AP"], abs=1e-9)


def test_the_writer_refuses_what_breaks_the_contract(tmp_path):
    writer = PoseMapsWriter(tmp_path / "d")
    heat, tags = np.zeros((14, 64, 64), np.float32), np.zeros((14, 32, 32), np.float32)
    with pytest.raises(DatasetError, match=r"channel-last; fix: .*transpose\(2, 0, 1\)"):
        writer.add(1, heat.transpose(1, 2, 0), tags, 100, 100)
    with pytest.raises(DatasetError, match="batch axis"):
        writer.add(1, heat[None], tags, 100, 100)
    with pytest.raises(DatasetError, match="same field of view"):
        writer.add(1, heat, np.zeros((14, 32, 16), np.float32), 100, 100)
    writer.add(1, heat, tags, 100, 100)
    with pytest.raises(DatasetError, match="added twice"):
        writer.add(1, heat, tags, 100, 100)
    writer.close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        PoseMapsWriter(tmp_path / "d")
    ann = json.loads((tmp_path / "d" / "annotations.json").read_text())
    assert "annotations" not in ann and ann["images"][0]["id"] == 1  # prediction only


@pytest.mark.parametrize("heat, tags, hint", [
    ((14, 64, 64), (14, 2, 32, 32), r"\[K, D, H, W\]; fix: D goes last, .*transpose\(0, 2, 3, 1\)"),
    ((14, 64, 64), (32, 32, 14), r"channel-last; fix: .*arr.transpose\(2, 0, 1\)"),
    ((14, 64, 64), (32, 32, 14, 2), r"channel-last; fix: .*arr.transpose\(2, 0, 1, 3\)"),
    ((17, 64, 64), (17, 32, 32), r"17 maps are coco17's joints: .*layout='coco17'"),
    ((15, 64, 64), (14, 32, 32), r"centre .* channel: drop it, arr\[:14\]"),
    ((14, 64, 64), (1, 14, 32, 32, 2), r"batch axis, arr\[0\]"),
])
def test_the_writer_says_what_to_do_for_each_usual_slip(tmp_path, heat, tags, hint):
    writer = PoseMapsWriter(tmp_path / "d", layout="crowdpose14")
    with pytest.raises(DatasetError, match=hint):
        writer.add(1, np.zeros(heat, np.float32), np.zeros(tags, np.float32), 100, 100)


def test_affine_from_center_scale_maps_the_heatmap_centre_to_the_centre():
    a = affine_from_center_scale((320, 240), (640, 640), (128, 128))
    assert a @ [64, 64, 1] == pytest.approx([320, 240])
    assert a @ [0, 0, 1] == pytest.approx([0, -80])
    shifted = affine_from_center_scale((320, 240), (640, 640), (128, 128), half_pixel=True)
    assert shifted @ [63.5, 63.5, 1] == pytest.approx([320, 240])  # pixel 63's centre


def test_predict_draws_people_over_heatmaps_and_over_images(small_dataset, tmp_path):
    from PIL import Image

    source = PoseMapsDataset(small_dataset)
    images = tmp_path / "images"
    images.mkdir()
    with PoseMapsWriter(tmp_path / "mine") as writer:  # prediction-only, png images
        for image_id in source.image_ids[:3]:
            maps, info = source.load_maps(image_id), source.image(image_id)
            writer.add(image_id, maps.heatmaps, maps.tags, info["width"], info["height"],
                       file_name=f"{image_id}.png", map_to_image=maps.map_to_image)
            pixels = np.full((info["height"], info["width"], 3), 40 * image_id, np.uint8)
            Image.fromarray(pixels).save(images / f"{image_id}.png")
    for extra, where in (([], "heat"), ([f"images={images}"], "img")):
        cfg = api.settings("predict", ["grouping.run=[ae]", f"input={tmp_path / 'mine'}",
                                      f"out={tmp_path / where / 'results.json'}", "draw=2",
                                      "progress=false", *extra])
        assert predict(cfg, tmp_path / where) > 0
        drawn = sorted(p.name for p in (tmp_path / where / "figures").glob("*.png"))
        assert drawn == [f"predict_{i}.png" for i in source.image_ids[:2]]
    heat_png = (tmp_path / "heat" / "figures" / drawn[0]).read_bytes()
    assert heat_png != (tmp_path / "img" / "figures" / drawn[0]).read_bytes()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(images / f"{source.image_ids[0]}.png")
    with pytest.raises(DatasetError, match="5x5 pixels, but annotations.json says"):
        predict(cfg, tmp_path / "img")


def noisy_dump(source: Path, out: Path, heat_floor: float | None) -> Path:
    """The source's maps under a network's low background everywhere (below 0.08, tags
    jittered), written as full maps or as a training dump."""
    ds = PoseMapsDataset(source)
    rng = np.random.default_rng(0)
    with PoseMapsWriter(out, layout=ds.layout.name, heat_floor=heat_floor) as writer:
        for image_id in ds.image_ids:
            maps, info = ds.load_maps(image_id), ds.image(image_id)
            background = np.random.default_rng(image_id).uniform(0, 0.08, maps.heatmaps.shape)
            heat = np.maximum(maps.heatmaps, background)
            tags = maps.tags + rng.normal(0, 0.05, maps.tags.shape)
            writer.add(image_id, heat, tags, info["width"], info["height"],
                       map_to_image=maps.map_to_image, people=ds.annotations_of(image_id))
    return out


def test_a_training_dump_builds_the_graphs_of_full_maps_in_less_disk(small_dataset, tmp_path):
    from posegnn.data.cache import build_graphs
    from posegnn.data.graph import GraphConfig
    from posegnn.tasks.check import check_dataset, format_result

    full = PoseMapsDataset(noisy_dump(small_dataset, tmp_path / "full", None))
    kept = PoseMapsDataset(noisy_dump(small_dataset, tmp_path / "kept", 0.1))
    assert (full.heat_floor, kept.heat_floor) == (None, 0.1)
    image_id = kept.image_ids[0]
    heat = kept.load_maps(image_id).heatmaps
    assert 0.5 < (heat == 0).mean() < 1  # the background is gone, the people are not
    size = {name: sum(p.stat().st_size for p in (tmp_path / name / "maps").glob("*.npz"))
            for name in ("full", "kept")}
    assert size["kept"] < size["full"] / 3

    cfg = GraphConfig()
    for a, b in zip(build_graphs(full, full.image_ids, cfg, progress=False),
                    build_graphs(kept, kept.image_ids, cfg, progress=False), strict=True):
        assert a.keys() == b.keys() and a.num_nodes > 10
        for key in a.keys():
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key

    lower = GraphConfig()
    lower.candidates.threshold = 0.05
    with pytest.raises(DatasetError, match=r"kept: a training dump .*threshold=0.05"):
        build_graphs(kept, kept.image_ids, lower, progress=False)
    with pytest.raises(DatasetError, match="per_map reads whole maps"):
        build_graphs(kept, kept.image_ids, GraphConfig(normalization="per_map"),
                     progress=False)
    build_graphs(full, full.image_ids, lower, progress=False)  # full maps allow it
    assert "a training dump: heat below 0.1" in format_result(check_dataset(kept.root))

