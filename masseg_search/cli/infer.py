"""`masseg-search infer`: every video under one or more (scale, bias) configurations in one engine pass."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `infer` command."""
    parser = subparsers.add_parser(
        "infer",
        help="track every object of every video under K (scale, bias) configurations; store low-res logits",
        description="One engine pass per video (the image encoder once per frame, objects x configurations "
        "batched) writes <out>/<config_id>/<video>/ low-res logits (s20_b-10, s7.5_b-4, ...). Resumable: finished "
        "videos are skipped, half-written ones redone. Equal to plain SAM2 (tools/vos_inference.py) per configuration.",
    )
    parser.add_argument("--model-config", required=True, help="tiny64 | tiny128 | tiny256 | a sam2 config name | a yaml path")
    parser.add_argument("--checkpoint", help="official {'model': ...} or training checkpoint (omit = random weights)")
    parser.add_argument("--data", required=True, help="dataset root (MOSE or DAVIS layout)")
    parser.add_argument("--split-list", help="list file of the videos to run (default: every video folder)")
    parser.add_argument("--configs", default="", help='configurations "scale,bias;scale,bias", e.g. "20,-10;7.5,-4"')
    parser.add_argument("--per-type", help="best_configs.yaml from tune-mss: each object also runs its scene type's "
                        "configuration, stored under <out>/per_type/")
    parser.add_argument("--policy", help="policy.yaml from tune-mss --policy learned: each object also runs the "
                        "configuration the learned policy gives it (from its first-frame features), stored under "
                        "<out>/policy/")
    parser.add_argument("--scene-types", help="scene-type CSV (video, object_id, scene_type and the features, as "
                        "`data scene-types` writes it); default: computed with the demo config's rules")
    parser.add_argument("--out", required=True, help="predictions folder, e.g. results/predictions/test")
    parser.add_argument("--view", help="store as <config_id>@VIEW (e.g. another sweep trial's checkpoint beside the "
                        "best one): a view the ensemble can fuse with the base predictions")
    parser.add_argument("--flip", action="store_true", help="track the horizontally mirrored video and mirror the "
                        "logits back (test-time augmentation); the view defaults to 'flip'")
    parser.add_argument("--save-masks", action="store_true",
                        help="also write <out>/<config_id>/Annotations/<video>/<frame>.png (video resolution)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--postprocess", action="store_true",
                        help="mirror build_sam2_video_predictor(apply_postprocessing=True)")
    parser.add_argument("--skip-bad", action="store_true", help="log and skip bad videos instead of stopping")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0 = torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run inference and say where the results are."""
    import logging

    from masseg_search.inference.infer import run_inference

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run_inference(args.model_config, args.checkpoint, args.data, args.out, args.configs or None,
                        split_list=args.split_list, per_type=args.per_type, policy=args.policy,
                        scene_types=args.scene_types,
                        save_masks=args.save_masks, device=args.device, skip_bad=args.skip_bad,
                        postprocess=args.postprocess, progress=not args.no_progress, view=args.view,
                        flip=args.flip)
    print(f"predictions in {out}")
    return 0
