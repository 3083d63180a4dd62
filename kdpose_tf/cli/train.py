"""`kdpose train` and `kdpose distill`: arguments -> `kdpose_tf.training.fit_resumable` on a model or a Distiller."""

from __future__ import annotations

from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_data, load_model, model_input_size, save_model
from kdpose_tf.runtimes.pretrained_models import is_pretrained_source


def _strategy(name):
    from kdpose_tf.training import make_strategy

    try:
        return make_strategy(name)
    except ValueError as e:
        raise CLIError(f"--distribute: {e}") from None


def _training_data(args):
    """(training samples, keypoint set, validation samples or None) from --data / --val-data."""
    data = load_data(args.data, on_bad_sample=args.on_bad_sample)
    val = load_data(args.val_data, args.on_bad_sample, "--val-data").samples if args.val_data else None
    return data.samples, data.keypoint_set, val


# Arguments that do not change what a run trains: where it writes, and how the work is spread.
_NOT_IDENTITY = ("run_dir", "output", "preset_out", "distribute")


def run_identity(args) -> dict:
    """What a `kdpose train` / `distill` run was started with (its other arguments: model, data, batch
    size, epochs, lr, seed, method, teacher, input size, ...). `fit_resumable` records it in the run
    directory and refuses to resume a run directory started with another."""
    from kdpose_tf.utils.io import jsonable

    return jsonable({k: v for k, v in sorted(vars(args).items()) if k not in _NOT_IDENTITY})


def default_run_dir(args, name) -> str:
    """runs/<name>_<hash of the run identity>: the same command resumes its own run, another one
    never shares it."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(run_identity(args), sort_keys=True).encode()).hexdigest()[:10]
    return str(Path("runs") / f"{name}_{digest}")


def _codec_for(model, input_size):
    from kdpose_tf.codecs.heatmap_codec import HeatmapCodec

    codec = getattr(model, "codec", None)
    return codec if codec is not None else HeatmapCodec(input_size=input_size)


def _model_overrides(args, keypoint_set):
    overrides = {"keypoint_set": keypoint_set.name, "num_keypoints": keypoint_set.num_keypoints}
    if args.input_size:
        overrides["input_size"] = args.input_size
    return overrides


def _finish(args, model, history, extra_metadata=None):
    from kdpose_tf.visualization import plot_history

    run_dir = Path(args.run_dir)
    plot_history({args.command: history}, run_dir / "curves.png", metrics=tuple(k for k in history if "loss" in k))
    written = save_model(model, args.output, args.preset_out,
                         metadata=extra_metadata if args.preset_out else None)
    final = {k: v[-1] for k, v in history.items() if v}
    print("final: " + ", ".join(f"{k}={v:.5f}" for k, v in sorted(final.items())))
    for path in written:
        print(f"wrote {path}")
    print(f"curves: {run_dir / 'curves.png'}")


def run_train(args):
    from kdpose_tf.training import fit_resumable, make_optimizer

    args.run_dir = args.run_dir or default_run_dir(args, "train_" + Path(args.model).stem)
    samples, keypoint_set, val = _training_data(args)
    strategy = _strategy(args.distribute)
    steps = max(1, len(samples) // args.batch_size)
    with strategy.scope():
        model = load_model(args.model, **_model_overrides(args, keypoint_set))
        model.compile(optimizer=make_optimizer(args.lr, steps * args.epochs))
    codec = _codec_for(model, model_input_size(model))
    history = fit_resumable(
        model, samples, codec, keypoint_set, args.run_dir, epochs=args.epochs, batch_size=args.batch_size,
        val_samples=val, augment=_augment(args), seed=args.seed, run_identity=run_identity(args),
    )
    _finish(args, model, history, {"training_data": args.data, "epochs": args.epochs})


def _augment(args):
    from kdpose_tf.data.transforms import AugmentConfig

    return AugmentConfig.none() if args.no_augment else AugmentConfig()


def build_distiller(args, teacher, student, steps_per_epoch):
    """The Distiller for --method fpd | lshm (dwpose is two fits, see run_distill)."""
    from kdpose_tf.distillation.distiller import Distiller
    from kdpose_tf.distillation.feature import FeatureDistillation
    from kdpose_tf.distillation.schedules import ConstantWeight, LSHMLinearSchedule

    if args.method == "fpd":
        alpha = ConstantWeight(args.alpha)
    elif args.method == "lshm":
        alpha = LSHMLinearSchedule(total_steps=steps_per_epoch * args.epochs, sigma=args.lshm_sigma)
    else:
        raise CLIError(f"build_distiller handles fpd and lshm, got {args.method!r}")
    features = ()
    if args.teacher_feature:
        features = (FeatureDistillation(args.teacher_feature, args.student_feature),)
    return Distiller(teacher, student, alpha=alpha, feature_distillations=features,
                     resize_teacher="bilinear" if args.resize_teacher else None)


def run_distill(args):
    from kdpose_tf.data.datasets import load_unlabelled
    from kdpose_tf.distillation.pretrained import attach_pretrained, pretrained_teachers
    from kdpose_tf.distillation.teacher import load_teacher
    from kdpose_tf.training import fit_resumable, make_optimizer

    if bool(args.teacher_feature) != bool(args.student_feature):
        raise CLIError("feature distillation needs both --teacher-feature and --student-feature")
    args.run_dir = args.run_dir or default_run_dir(args, f"distill_{args.method}_{Path(args.student).stem}")
    samples, keypoint_set, val = _training_data(args)
    strategy = _strategy(args.distribute)
    steps = max(1, len(samples) // args.batch_size)
    pretrained = pretrained_teachers(args.teacher, flip_test=args.teacher_flip_test)
    if pretrained is not None:
        # Pretrained models from other frameworks (heatmap presets, .xml/.onnx/.tflite, ensembles): their
        # targets are computed once and travel with the samples (warped by each augmentation).
        if args.teacher_feature:
            raise CLIError("--teacher-feature needs a Keras teacher; a pretrained teacher from another framework "
                           "has no features")
        if args.unlabeled:
            samples = list(samples) + list(load_unlabelled(args.unlabeled, keypoint_set, args.on_bad_sample))
        samples = attach_pretrained(samples, pretrained, keypoint_set, min_score=args.teacher_min_score)
        if val:
            val = attach_pretrained(val, pretrained, keypoint_set, min_score=args.teacher_min_score)
    elif args.unlabeled:
        raise CLIError("--unlabeled needs a pretrained teacher (e.g. --teacher pp_tinypose_256x192): unlabelled "
                       "people learn from the teacher's cached heatmaps")
    with strategy.scope():
        teacher = None if pretrained is not None else load_teacher(args.teacher)
        overrides = _model_overrides(args, keypoint_set)
        if teacher is not None and not is_pretrained_source(args.student):  # an imported student keeps its size
            overrides.setdefault("input_size", model_input_size(teacher))   # unless --input-size says otherwise
        student = load_model(args.student, **overrides)
    codec = _codec_for(student, model_input_size(student))
    common = dict(batch_size=args.batch_size, val_samples=val, augment=_augment(args), seed=args.seed,
                  run_identity=run_identity(args))
    if args.method == "dwpose":
        from kdpose_tf import training_dwpose as dwpose

        student, history = dwpose.run_two_stage(
            teacher, student, samples, codec, keypoint_set, run_dir=args.run_dir, epochs=args.epochs,
            stage2_fraction=args.stage2_fraction, alpha=args.dwpose_feature_weight, beta=args.dwpose_logit_weight,
            feature_layers=(args.teacher_feature, args.student_feature) if args.teacher_feature else None,
            optimizer_fn=lambda n: make_optimizer(args.lr, n),
            strategy=strategy, **common,
        )
    else:
        with strategy.scope():
            distiller = build_distiller(args, teacher, student, steps)
            distiller.compile(optimizer=make_optimizer(args.lr, steps * args.epochs))
        history = fit_resumable(distiller, samples, codec, keypoint_set, args.run_dir, epochs=args.epochs, **common)
        student = distiller.student
    _finish(args, student, history, {"training_data": args.data, "distilled_from": args.teacher,
                                     "method": args.method, "epochs": args.epochs})


def run_soup(args):
    """`kdpose soup A.keras B.keras ... --output soup.keras`: the uniform weight soup of trained seeds."""
    from kdpose_tf.training import average_weights

    if len(args.models) < 2:
        raise CLIError(f"soup needs two or more models, got {len(args.models)}")
    if not (args.output or args.preset_out):
        raise CLIError("soup needs --output FILE.keras and/or --preset-out DIR")
    models = []
    for spec in args.models:
        if not Path(spec).exists():
            raise CLIError(f"{spec}: no such file or directory (soup takes trained .keras files or preset directories)")
        if not (spec.endswith(".keras") or Path(spec).is_dir()):
            raise CLIError(f"{spec}: soup averages trained models: give .keras files or preset directories")
        models.append(load_model(spec))
    try:
        soup = average_weights(models)
    except ValueError as e:
        names = ", ".join(f"model {i} = {spec}" for i, spec in enumerate(args.models))
        raise CLIError(f"{e} ({names}); a soup needs one architecture, e.g. seeds of one recipe") from None
    for path in save_model(soup, args.output, args.preset_out):
        print(f"wrote {path}: the mean of {len(models)} models' weights")
