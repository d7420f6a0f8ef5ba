"""`masseg-search infer`: every video under one or more (scale, bias) configurations in one engine pass; or another
model family's predictions (Cutie, or any tool's masks imported) stored as a view beside SAM2's."""
from __future__ import annotations

import argparse
from pathlib import Path

from masseg_search.cli.options import add_config_options, load_args_config
from masseg_search.cluster.session import resolve_address
from masseg_search.config import ProjectConfig
from masseg_search.errors import MassegError

SHORTHANDS = {"model_config": "model.config", "checkpoint": "model.checkpoint", "device": "model.device",
              "postprocess": "model.postprocess", "data": "data.root", "workers": "infer.workers",
              "gpus_per_worker": "infer.gpus_per_worker"}

EPILOG = """other model families (stored as <config_id>@VIEW, default s20_b-10@VIEW, for ensemble to fuse or choose):
  # any VOS tool's Annotations-style palette PNGs (Cutie, XMem, DeAOT, SAM2Long, SeC), or per-object probability
  # maps (<video>/<frame>.npz: object_ids, probabilities (N,H,W)[, background]); checked like a submission first
  masseg-search infer --import-masks runs/xmem/Annotations --view xmem --data D --out results/predictions/val
  # Cutie (rf-cutie) with the weights named in the config's cutie section (nothing downloads)
  masseg-search infer --engine cutie --config my.yaml --view cutie --data D --out results/predictions/val
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `infer` command."""
    parser = subparsers.add_parser(
        "infer",
        help="track every object of every video under K (scale, bias) configurations; store low-res logits",
        description="One engine pass per video (the image encoder once per frame, objects x configurations "
        "batched) writes <out>/<config_id>/<video>/ low-res logits (s20_b-10, s7.5_b-4, ...). Resumable: finished "
        "videos are skipped, half-written ones redone. Equal to plain SAM2 (tools/vos_inference.py) per configuration. "
        "The model, the checkpoint and the data come from the config (flags are shorthands for --set). "
        "--import-masks and --engine cutie store another model family's predictions as a view instead.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(parser)
    parser.add_argument("--model-config", help="SAM2: tiny64 | tiny128 | tiny256 | a sam2 config name | a yaml path "
                        "(--set model.config)")
    parser.add_argument("--checkpoint", help="official {'model': ...} or training checkpoint (--set model.checkpoint; "
                        "null = random weights); with --engine cutie: Cutie weights (default: cutie.weights)")
    parser.add_argument("--data", help="dataset root, MOSE or DAVIS layout (--set data.root)")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--split", help="val, test or train: the config's split (test: data.test_root and "
                           "data.test_split); another name: a list file under the dataset root")
    selection.add_argument("--split-list", help="list file of the videos to run (default: every video folder)")
    parser.add_argument("--configs", default="", help='configurations "scale,bias;scale,bias", e.g. "20,-10;7.5,-4"')
    parser.add_argument("--per-type", help="best_configs.yaml from tune-mss: each object also runs its scene type's "
                        "configuration, stored under <out>/per_type/")
    parser.add_argument("--policy", help="policy.yaml from tune-mss --policy learned: each object also runs the "
                        "configuration the learned policy gives it (from its first-frame features), stored under "
                        "<out>/policy/")
    parser.add_argument("--scene-types", help="scene-type CSV (video, object_id, scene_type and the features, as "
                        "`data scene-types` writes it); default: computed with the config's scene_types rules")
    parser.add_argument("--out", help="predictions folder (default with --split: <pipeline.out>/predictions/<split>, "
                        "where `run` keeps them)")
    parser.add_argument("--view", help="store as <config_id>@VIEW (e.g. another sweep trial's checkpoint beside the "
                        "best one): a view the ensemble can fuse with the base predictions")
    parser.add_argument("--flip", action="store_true", help="track the horizontally mirrored video and mirror the "
                        "logits back (test-time augmentation); the view defaults to 'flip'")
    parser.add_argument("--save-masks", action="store_true",
                        help="also write <out>/<config_id>/Annotations/<video>/<frame>.png (video resolution)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="--set model.device")
    parser.add_argument("--postprocess", action="store_true",
                        help="mirror build_sam2_video_predictor(apply_postprocessing=True) (--set model.postprocess=true)")
    parser.add_argument("--skip-bad", action="store_true", help="log and skip bad videos instead of stopping")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0 = torch's choice)")
    family = parser.add_argument_group("other model families (stored as a --view)")
    family.add_argument("--engine", choices=["sam2", "cutie"], default="sam2",
                        help="the model that tracks: SAM2 (default) or Cutie (rf-cutie; the config's cutie section)")
    family.add_argument("--import-masks", metavar="DIR", help="store another tool's predictions instead of running a "
                        "model: DIR/<video>/<frame>.png palette masks (or DIR/Annotations/...), or DIR/<video>/<frame>.npz "
                        "probability maps; checked like a submission")
    family.add_argument("--low-res", type=int, help="side of the stored low-res logits (default: that of the "
                        "predictions already in --out, so they fuse)")
    family.add_argument("--mask-logit-scale", type=float, help="scale of the pseudo-logits masks or probabilities "
                        "become (default 1, or the config's cutie.pseudo_logit_scale)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    cluster = parser.add_argument_group("on a Ray cluster (README: On a cluster; defaults: the config's infer section)")
    cluster.add_argument("--ray-address", help="spread the videos over the workers of this Ray cluster (auto, "
                         "host:port, ray://..., or local for a Ray on this machine; default: RAY_ADDRESS, else "
                         "infer.ray_address, else this process). Data, checkpoint and --out must be on storage "
                         "every node sees")
    cluster.add_argument("--workers", type=int, help="Ray workers, each keeping its model loaded (--set "
                         "infer.workers; default: one per GPU, or per CPU on a cluster without GPUs)")
    cluster.add_argument("--gpus-per-worker", type=float, help="GPU share per worker, e.g. 0.5 for two on a GPU; 0 = "
                         "CPU workers (--set infer.gpus_per_worker; default: 1 where the cluster has GPUs, else 0)")
    parser.set_defaults(func=run)


def split_data(config: ProjectConfig, split: str | None, split_list: str | None) -> tuple[Path, Path | None]:
    """(dataset root, list file or None) of ``--split`` / ``--split-list`` under the config: ``val`` and ``train``
    are data.val_split / data.train_split under data.root, ``test`` is data.test_split under data.test_root."""
    from masseg_search.pipeline.plan import resolve_split_list

    data = config.data
    if split_list is not None:
        return Path(data.root), Path(split_list)
    if split == "test":
        return Path(data.test_data_root), resolve_split_list(data.test_data_root, data.test_split)
    named = {"val": data.val_split, "train": data.train_split}.get(split or "", split)
    return Path(data.root), resolve_split_list(data.root, named)


def run(args: argparse.Namespace) -> int:
    """Run inference and say where the results are."""
    import logging

    from masseg_search.inference.infer import run_inference

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_args_config(args, SHORTHANDS)
    root, split_list = split_data(config, args.split, args.split_list)
    out = args.out or (Path(config.pipeline.out) / "predictions" / args.split if args.split else None)
    if out is None:
        raise MassegError("--out is required without --split", fix="pass --out results/predictions/<split>, or --split "
                          "val|test to use <pipeline.out>/predictions/<split>")
    if args.import_masks or args.engine == "cutie":
        return _run_other_family(args, config, root, split_list, out)
    address = resolve_address(args.ray_address, config.infer.ray_address)
    if address is not None:
        return _run_on_ray(args, config, root, split_list, out, address)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = config.model
    out = run_inference(model.config, model.checkpoint, root, out, args.configs or None, split_list=split_list,
                        per_type=args.per_type, policy=args.policy, scene_types=args.scene_types,
                        scene_type_rules=config.scene_types, save_masks=args.save_masks, device=model.device,
                        skip_bad=args.skip_bad, postprocess=model.postprocess, progress=not args.no_progress,
                        view=args.view, flip=args.flip)
    print(f"predictions in {out}")
    return 0


def _run_on_ray(args: argparse.Namespace, config: ProjectConfig, root: Path, split_list: Path | None, out: Path,
                address: str) -> int:
    """The same run with its videos spread over the workers of the Ray cluster at ``address``."""
    import logging

    from masseg_search.inference.distributed import run_inference_on_ray

    logging.getLogger("masseg_search.inference.infer").setLevel(logging.WARNING)  # its per-video lines
    section, model = config.infer, config.model
    cpus = max(section.cpus_per_worker, float(args.threads)) if args.threads else section.cpus_per_worker
    result = run_inference_on_ray(address, model.config, model.checkpoint, root, out, args.configs or None,
                                  split_list=split_list, workers=section.workers,
                                  gpus_per_worker=section.gpus_per_worker, cpus_per_worker=cpus,
                                  per_type=args.per_type, policy=args.policy, scene_types=args.scene_types,
                                  scene_type_rules=config.scene_types, save_masks=args.save_masks,
                                  device=model.device, skip_bad=args.skip_bad, postprocess=model.postprocess,
                                  progress=not args.no_progress, view=args.view, flip=args.flip)
    restarts = result.restarted_workers
    print(f"{len(result.ran)} videos run, {len(result.already_done)} already done, by {result.workers} Ray workers "
          f"on {len(result.nodes)} node(s)" + (f"; {restarts} worker(s) restarted after their process died" if restarts else ""))
    print(f"predictions in {result.out_dir}")
    return 0


def _run_other_family(args: argparse.Namespace, config: ProjectConfig, root: Path, split_list: Path | None,
                      out: Path) -> int:
    """--import-masks DIR or --engine cutie: another family's predictions stored as view --view."""
    if args.import_masks and args.engine == "cutie":
        raise MassegError("--import-masks and --engine cutie both given", fix="import masks, or run Cutie: one at a time")
    if args.flip or args.per_type or args.policy or args.save_masks or args.postprocess or args.ray_address:
        raise MassegError("--flip, --per-type, --policy, --save-masks, --postprocess and --ray-address apply to SAM2 "
                          "runs only",
                          fix="drop them with --import-masks / --engine cutie")
    if args.import_masks:
        from masseg_search.inference.import_masks import import_masks

        out = import_masks(args.import_masks, root, out, args.view, split_list=split_list,
                           configs=args.configs or None, low_res=args.low_res,
                           scale=args.mask_logit_scale if args.mask_logit_scale is not None else 1.0,
                           progress=not args.no_progress)
        print(f"imported {args.import_masks} as view {args.view} in {out}")
        return 0
    from masseg_search.inference.cutie_infer import run_cutie_inference

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    section = config.cutie
    out = run_cutie_inference(root, out, args.view, model=section.model, weights=args.checkpoint or section.weights,
                              split_list=split_list, configs=args.configs or None, low_res=args.low_res,
                              scale=args.mask_logit_scale if args.mask_logit_scale is not None else section.pseudo_logit_scale,
                              max_internal_size=section.max_internal_size, device=config.model.device,
                              skip_bad=args.skip_bad, progress=not args.no_progress)
    print(f"Cutie predictions as view {args.view} in {out}")
    return 0
