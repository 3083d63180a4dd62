"""`kdpose train` and `kdpose distill`: arguments -> `kdpose_tf.training.fit_resumable` on a model or a Distiller."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kdpose_tf.cli.common import CLIError, load_data, load_model, model_input_size, save_model
from kdpose_tf.data.sample import TEACHER_HEATMAPS, TEACHER_KEYPOINTS, TEACHER_KEYS
from kdpose_tf.errors import KdposeError
from kdpose_tf.runtimes.pretrained_models import is_pretrained_source


def _strategy(name):
    from kdpose_tf.training import make_strategy

    try:
        return make_strategy(name)
    except ValueError as e:
        raise CLIError(f"--distribute: {e}") from None


def _training_data(args):
    """(training samples, keypoint set, validation samples or None, what --data says of itself: a pack's
    pack.json or None) from --data / --val-data."""
    data = load_data(args.data, on_bad_sample=args.on_bad_sample)
    val = load_data(args.val_data, args.on_bad_sample, "--val-data").samples if args.val_data else None
    return data.samples, data.keypoint_set, val, data.info


def _carries_teacher(samples):
    """True when the samples come with a teacher's targets (a pack written with a teacher)."""
    return bool(samples) and any(key in samples[0].extra for key in (TEACHER_HEATMAPS, TEACHER_KEYPOINTS))


# Arguments that do not change what a run trains: where it writes, and how the work is spread
# (and the pack options, which only --save-pack reads: it writes a pack instead of training).
_NOT_IDENTITY = ("run_dir", "output", "preset_out", "distribute", "save_pack", "pack_margin", "pack_jpeg_quality",
                 "pack_heatmap_stride")


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
    samples, keypoint_set, val, info = _training_data(args)
    # labels only: a pack's teacher targets are not read (nor warped with every crop)
    samples, val = _without_teacher(samples), _without_teacher(val)
    strategy = _strategy(args.distribute)
    steps = max(1, len(samples) // args.batch_size)
    overrides = _model_overrides(args, keypoint_set)
    if info and info.get("input_size"):  # a pack's people are cut at its input size
        overrides.setdefault("input_size", tuple(info["input_size"]))
    with strategy.scope():
        model = load_model(args.model, **overrides)
        _probe_new_joints(model, samples, args.run_dir)
        model.compile(optimizer=make_optimizer(args.lr, steps * args.epochs))
    codec = _codec_for(model, model_input_size(model))
    history = fit_resumable(
        model, samples, codec, keypoint_set, args.run_dir, epochs=args.epochs, batch_size=args.batch_size,
        val_samples=val, augment=_augment(args), seed=args.seed, run_identity=run_identity(args),
    )
    _finish(args, model, history, {"training_data": args.data, "epochs": args.epochs})


def _probe_new_joints(model, samples, run_dir):
    """An imported model's joints its source lacked (LSP's neck and head top on a COCO network): their head
    channels fitted by the linear probe before fine-tuning (`kdpose_tf.training_probe`); a run that resumes
    loads its checkpoint over them."""
    from kdpose_tf.training import read_run_state
    from kdpose_tf.training_probe import probe_new_joints

    joints = getattr(model, "new_joints", ())
    if not joints or read_run_state(run_dir) is not None:
        return
    seen = probe_new_joints(model, samples, joints)
    print("linear probe of the joints the imported model lacked: "
          + ", ".join(f"{name} ({n} people)" for name, n in seen.items()), flush=True)


def _without_teacher(samples):
    """`samples` without teacher targets in `extra` (None stays None)."""
    if samples is None or not any(key in s.extra for s in samples[:1] for key in TEACHER_KEYS):
        return samples
    return [dataclasses.replace(s, extra={k: v for k, v in s.extra.items() if k not in TEACHER_KEYS})
            for s in samples]


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
    if args.save_pack and args.val_data:
        raise CLIError("--save-pack packs the --data people; pack validation people with a command of their own "
                       "(--data VAL --save-pack VAL_PACK), then train with --val-data pack:VAL_PACK")
    if not args.save_pack:
        args.run_dir = args.run_dir or default_run_dir(args, f"distill_{args.method}_{Path(args.student).stem}")
    samples, keypoint_set, val, info = _training_data(args)
    packed = _carries_teacher(samples)
    packed_by = ((info or {}).get("info") or {}).get("teacher")
    if packed and args.teacher:
        raise CLIError(f"--data {args.data} carries the targets of its teacher ({packed_by or 'packed'}); drop "
                       f"--teacher {args.teacher} (the student distils from the packed targets)")
    if not packed and not args.teacher:
        raise CLIError("distill needs --teacher, or --data pack:DIR of a pack written with one "
                       "(kdpose distill --teacher ... --save-pack DIR)")
    strategy = _strategy(args.distribute)
    pretrained = pretrained_teachers(args.teacher, flip_test=args.teacher_flip_test, scales=args.teacher_scales) if args.teacher else None
    if packed and args.teacher_feature:
        raise CLIError("--teacher-feature needs a Keras teacher; a pack carries its teacher's heatmaps, not features")
    if args.save_pack and not (pretrained or packed):
        raise CLIError(f"--save-pack packs a pretrained teacher's targets (presets, .xml/.onnx/.tflite); the Keras "
                       f"teacher {args.teacher} runs inside the training step and cannot be packed")
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
    steps = max(1, len(samples) // args.batch_size)  # after --unlabeled: the schedules span every person
    with strategy.scope():
        teacher = None if pretrained is not None or packed else load_teacher(args.teacher)
        overrides = _model_overrides(args, keypoint_set)
        if teacher is not None and not is_pretrained_source(args.student):  # an imported student keeps its size
            overrides.setdefault("input_size", model_input_size(teacher))   # unless --input-size says otherwise
        if info and info.get("input_size"):  # a pack's people are cut at its input size
            overrides.setdefault("input_size", tuple(info["input_size"]))
        student = load_model(args.student, **overrides)
        if not args.save_pack:
            _probe_new_joints(student, samples, args.run_dir)
    codec = _codec_for(student, model_input_size(student))
    if args.save_pack:
        return _save_pack(args, samples, codec)
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
    _finish(args, student, history, {"training_data": args.data, "distilled_from": args.teacher or packed_by,
                                     "method": args.method, "epochs": args.epochs})


def _save_pack(args, samples, codec):
    """--save-pack: the people with their teacher's targets as a pack folder (`kdpose_tf.data.pack`)."""
    import os

    from kdpose_tf.data.pack import write_pack

    try:
        meta = write_pack(samples, args.save_pack, codec, margin=args.pack_margin,
                          jpeg_quality=args.pack_jpeg_quality, heatmap_stride=args.pack_heatmap_stride,
                          info={"teacher": args.teacher, "data": args.data, "unlabeled": args.unlabeled,
                                "teacher_flip_test": args.teacher_flip_test,
                                "teacher_scales": list(args.teacher_scales),
                                "teacher_min_score": args.teacher_min_score})
    except ValueError as e:
        if isinstance(e, KdposeError):
            raise
        raise CLIError(str(e)) from None
    size = sum(f.stat().st_size for f in Path(args.save_pack).rglob("*") if f.is_file())
    h, w = meta["input_size"]
    print(f"wrote {args.save_pack}: {meta['num_people']} people at {h}x{w} (regions {meta['region_size'][0]}x"
          f"{meta['region_size'][1]}), teacher {meta['teacher']} from {args.teacher}, {size / 2**20:.1f} MiB")
    print(f"train from it (any Keras backend, no TensorFlow or data set needed): kdpose distill --student "
          f"{args.student} --data pack:{os.path.abspath(args.save_pack)} --output student.keras")


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
