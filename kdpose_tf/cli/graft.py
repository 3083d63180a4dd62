"""`kdpose graft`: the proposal's parts (PSA, depthwise CSP-PAN) grafted onto an imported pretrained model,
written as `.keras` students for `kdpose distill --student FILE.keras` (`kdpose_tf.models.imported.graft`)."""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_model, save_model


def _describe(model, base_params):
    from kdpose_tf.models.summary import count_flops, count_params

    params = count_params(model)
    return (f"{params / 1e6:.3f} M params ({params - base_params:+d} over the base), "
            f"{count_flops(model) / 1e9:.4f} GMACs")


def run_graft(args):
    from kdpose_tf.keypoints import get_keypoint_set
    from kdpose_tf.models.imported.graft import VARIANTS, graft
    from kdpose_tf.models.summary import count_params

    flags = {"psa_head": args.psa_head, "psa_blocks": args.psa_blocks, "csp_pan": args.csp_pan}
    if args.variants:
        if args.output or any(flags.values()):
            raise CLIError("--variants DIR writes every variant; give it without --output / --psa-head / "
                           "--psa-blocks / --csp-pan")
        jobs = [(str(Path(args.variants) / f"{name}.keras"), kwargs) for name, kwargs in VARIANTS.items()]
    elif not args.output:
        raise CLIError("give --output FILE.keras (with --psa-head / --psa-blocks / --csp-pan) or --variants DIR")
    elif not any(flags.values()):
        raise CLIError("nothing to graft: give --psa-head, --psa-blocks and/or --csp-pan (or --variants DIR)")
    else:
        jobs = [(args.output, flags)]
    base = load_model(args.base, keypoint_set=args.keypoint_set)
    have = getattr(base, "keypoint_set", None)
    if args.keypoint_set and have is not None and have.name != get_keypoint_set(args.keypoint_set).name:
        raise CLIError(f"--base {args.base} predicts {have.name}, not --keypoint-set {args.keypoint_set} (a trained "
                       "model keeps its joints; give a pretrained source such as pp_tinypose_128x96 to import)")
    base_params = count_params(base)
    if args.variants:
        Path(args.variants).mkdir(parents=True, exist_ok=True)
    for path, kwargs in jobs:
        try:
            model = graft(base, block_site=args.block_site, step_scale=args.step_scale, **kwargs) if kwargs else base
        except ValueError as e:
            raise CLIError(str(e)) from None
        save_model(model, path)
        parts = ", ".join(k for k, v in kwargs.items() if v) or "nothing grafted"
        print(f"wrote {path}: {parts}; {_describe(model, base_params)}")
    return 0
