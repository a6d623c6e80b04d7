"""Dump a HigherHRNet model's maps on its test split as a pose-maps dataset.

Run from a checkout of HRNet/HigherHRNet-Human-Pose-Estimation, with its usual config
and options, e.g.::

    python -m posegnn.integrations.higherhrnet_dump --higherhrnet . --out crowdpose_maps \\
        --cfg experiments/crowdpose/higher_hrnet/w32_512_adam_lr1e-3.yaml \\
        TEST.MODEL_FILE models/pytorch/pose_crowdpose/pose_higher_hrnet_w32_512.pth

It runs HigherHRNet's own test path (``tools/valid.py``: one scale, its flip test) and
writes, per image, the two stages' averaged heatmaps at 1/2 of the input, the tags of
both flip passes as a 2-D tag ([K, H/2, W/2, 2]) and the ``map_to_image`` that
``get_final_preds`` would apply (docs/real_networks.md explains each step), with the
split's annotations. ``posegnn-check OUT`` then validates the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="higherhrnet_dump", description=__doc__.split("\n")[0])
    p.add_argument("--higherhrnet", default=".", help="the HigherHRNet checkout (holds lib/)")
    p.add_argument("--cfg", required=True, help="HigherHRNet experiment yaml")
    p.add_argument("--out", required=True, help="the pose-maps dataset folder to write")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="HigherHRNet config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    lib = Path(args.higherhrnet).resolve() / "lib"
    if not (lib / "core" / "inference.py").is_file():
        raise SystemExit(f"higherhrnet_dump: {lib} is not HigherHRNet's lib/ "
                         "(give --higherhrnet, the checkout's folder)")
    sys.path.insert(0, str(lib))
    import models  # noqa: F401 - HigherHRNet's, from lib/
    import torch
    import torchvision
    from config import cfg, check_config, update_config
    from core.inference import get_multi_stage_outputs
    from dataset import make_test_dataloader
    from utils.transforms import resize_align_multi_scale

    from posegnn.writer import PoseMapsWriter, affine_from_center_scale

    update_config(cfg, args)
    check_config(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = eval(f"models.{cfg.MODEL.NAME}.get_pose_net")(cfg, is_train=False)
    model.load_state_dict(torch.load(cfg.TEST.MODEL_FILE, map_location="cpu"), strict=True)
    model = model.to(device).eval()
    loader, dataset = make_test_dataloader(cfg)
    normalize = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406],
                                         std=[0.229, 0.224, 0.225])])
    joints = cfg.DATASET.NUM_JOINTS - int(bool(cfg.DATASET.WITH_CENTER))
    layout = {14: "crowdpose14", 17: "coco17"}[joints]
    coco = dataset.coco
    with PoseMapsWriter(args.out, layout=layout, overwrite=args.overwrite) as out, \
            torch.no_grad():
        for i, (images, _) in enumerate(loader):
            if args.limit and i >= args.limit:
                break
            image_id = int(dataset.ids[i])
            info = coco.imgs[image_id]
            image = images[0].cpu().numpy()
            resized, center, scale = resize_align_multi_scale(
                image, cfg.DATASET.INPUT_SIZE, 1.0, 1.0)
            x = normalize(resized).unsqueeze(0).to(device)
            _, heatmaps, tags = get_multi_stage_outputs(cfg, model, x, cfg.TEST.FLIP_TEST,
                                                        project2image=False)
            heat = torch.stack(heatmaps).mean(0)[0][:joints]     # [K, H/2, W/2]
            tag = torch.stack([t[0] for t in tags], dim=-1)[:joints]  # [K, H/2, W/2, 2]
            affine = affine_from_center_scale(center, scale * 200, heat.shape[:0:-1],
                                              half_pixel=True)
            people = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            out.add(image_id, heat.cpu().numpy(), tag.cpu().numpy(), info["width"],
                    info["height"], file_name=info["file_name"], map_to_image=affine,
                    crowd_index=info.get("crowdIndex", info.get("crowd_index")),
                    people=people)
            if i % 100 == 0:
                print(f"{i} images dumped to {args.out}", flush=True)
    print(f"wrote {args.out}; check it with: posegnn-check {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
