"""`kdpose summary` and `kdpose presets`."""

from __future__ import annotations

from kdpose_tf.cli.common import load_model


def run_summary(args):
    from kdpose_tf.models.summary import count_flops, count_params

    overrides = {"input_size": args.input_size} if args.input_size else {}
    model = load_model(args.model, **overrides)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    params = count_params(model)
    macs = count_flops(model)
    print(f"model:        {args.model}")
    print(f"input:        {shape[0]}x{shape[1]}x{shape[2]}")
    print(f"parameters:   {params:,} ({params / 1e6:.2f} M)")
    print(f"multiply-adds: {macs:,} ({macs / 1e9:.3f} GMACs, reported as 'GFLOPs' in the pose papers)")


def run_presets(args):
    from kdpose_tf.models.presets import build, list_presets

    rows = list_presets()
    cols = ["name", "family", "input_size", "keypoint_set", "params_m", "gflops"]
    header = ["name", "family", "input", "keypoints", "paper params (M)", "paper GFLOPs"]
    if args.measure:
        from kdpose_tf.models.summary import count_flops, count_params

        for row in rows:
            model = build(row["name"])
            row["measured_params_m"] = count_params(model) / 1e6
            row["measured_gmacs"] = count_flops(model) / 1e9
        cols += ["measured_params_m", "measured_gmacs"]
        header += ["params (M)", "GMACs"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    if not args.measure:
        print("\n(published figures; `kdpose presets --measure` builds each model and counts them)")
    _print_shipped()


def _print_shipped():
    from kdpose_tf.models.presets import list_shipped

    rows = list_shipped()
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row["headline"]))
    header = ["name (trained weights shipped)", "keypoints", "input", "params (M)"] + keys
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["name"], row["keypoint_set"], _fmt(row["input_size"]), _fmt((row["parameter_count"] or 0) / 1e6)]
        cells += [_fmt(row["headline"].get(k)) for k in keys]
        print("| " + " | ".join(cells) + " |")
    print("(figures from each preset's model card, metadata.json; `PoseEstimator.from_preset(name)` loads it offline)")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (tuple, list)):
        return "x".join(str(x) for x in v)
    return "-" if v is None else str(v)
