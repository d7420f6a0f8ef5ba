"""`masseg-search infer`: every video under one or more (scale, bias) configurations in one engine pass; or another
model family's predictions (Cutie, or any tool's masks imported) stored as a view beside SAM2's."""
from __future__ import annotations

import argparse

from masseg_search.errors import MassegError

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
        "--import-masks and --engine cutie store another model family's predictions as a view instead.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-config", help="SAM2: tiny64 | tiny128 | tiny256 | a sam2 config name | a yaml path "
                        "(required with --engine sam2)")
    parser.add_argument("--checkpoint", help="official {'model': ...} or training checkpoint (omit = random weights); "
                        "with --engine cutie: Cutie weights (default: the config's cutie.weights)")
    parser.add_argument("--data", required=True, help="dataset root (MOSE or DAVIS layout)")
    parser.add_argument("--split-list", help="list file of the videos to run (default: every video folder)")
    parser.add_argument("--configs", default="", help='configurations "scale,bias;scale,bias", e.g. "20,-10;7.5,-4"')
    parser.add_argument("--per-type", help="best_configs.yaml from tune-mss: each object also runs its scene type's "
                        "configuration, stored under <out>/per_type/")
    parser.add_argument("--scene-types", help="scene-type CSV (video, object_id, scene_type); default: computed "
                        "with the demo config's rules")
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
    family = parser.add_argument_group("other model families (stored as a --view)")
    family.add_argument("--engine", choices=["sam2", "cutie"], default="sam2",
                        help="the model that tracks: SAM2 (default) or Cutie (rf-cutie; the config's cutie section)")
    family.add_argument("--import-masks", metavar="DIR", help="store another tool's predictions instead of running a "
                        "model: DIR/<video>/<frame>.png palette masks (or DIR/Annotations/...), or DIR/<video>/<frame>.npz "
                        "probability maps; checked like a submission")
    family.add_argument("--config", help="project config (its cutie section: model, weights, max_internal_size)")
    family.add_argument("--low-res", type=int, help="side of the stored low-res logits (default: that of the "
                        "predictions already in --out, so they fuse)")
    family.add_argument("--mask-logit-scale", type=float, help="scale of the pseudo-logits masks or probabilities "
                        "become (default 1, or the config's cutie.pseudo_logit_scale)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run inference and say where the results are."""
    import logging

    from masseg_search.inference.infer import run_inference

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.import_masks or args.engine == "cutie":
        return _run_other_family(args)
    if args.model_config is None:
        raise MassegError("--model-config is required to run SAM2", fix="pass --model-config tiny128 (or a sam2 yaml), "
                          "or --engine cutie / --import-masks DIR for another model family")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run_inference(args.model_config, args.checkpoint, args.data, args.out, args.configs or None,
                        split_list=args.split_list, per_type=args.per_type, scene_types=args.scene_types,
                        save_masks=args.save_masks, device=args.device, skip_bad=args.skip_bad,
                        postprocess=args.postprocess, progress=not args.no_progress, view=args.view,
                        flip=args.flip)
    print(f"predictions in {out}")
    return 0


def _run_other_family(args: argparse.Namespace) -> int:
    """--import-masks DIR or --engine cutie: another family's predictions stored as view --view."""
    from masseg_search.config import load_config

    if args.import_masks and args.engine == "cutie":
        raise MassegError("--import-masks and --engine cutie both given", fix="import masks, or run Cutie: one at a time")
    if args.flip or args.per_type or args.save_masks or args.postprocess:
        raise MassegError("--flip, --per-type, --save-masks and --postprocess apply to SAM2 runs only",
                          fix="drop them with --import-masks / --engine cutie")
    if args.import_masks:
        from masseg_search.inference.import_masks import import_masks

        out = import_masks(args.import_masks, args.data, args.out, args.view, split_list=args.split_list,
                           configs=args.configs or None, low_res=args.low_res,
                           scale=args.mask_logit_scale if args.mask_logit_scale is not None else 1.0,
                           progress=not args.no_progress)
        print(f"imported {args.import_masks} as view {args.view} in {out}")
        return 0
    from masseg_search.inference.cutie_infer import run_cutie_inference

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    section = load_config(args.config).cutie
    out = run_cutie_inference(args.data, args.out, args.view, model=section.model,
                              weights=args.checkpoint or section.weights, split_list=args.split_list,
                              configs=args.configs or None, low_res=args.low_res,
                              scale=args.mask_logit_scale if args.mask_logit_scale is not None else section.pseudo_logit_scale,
                              max_internal_size=section.max_internal_size, device=args.device,
                              skip_bad=args.skip_bad, progress=not args.no_progress)
    print(f"Cutie predictions as view {args.view} in {out}")
    return 0
