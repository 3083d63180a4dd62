"""Train issue-11 students on a GPU with Keras 3 on JAX, from a pack written by gpu_pack.py.

The lent GPU machine has JAX, numpy and OpenCV but no TensorFlow; kdpose_tf imports and trains
without it (Keras on JAX). The weights it writes (``.weights.h5``) are backend-agnostic and load
into the same preset built with TensorFlow.

Each person's base crop, ground-truth joints and teacher outputs are augmented together, in
numpy / cv2: random scale (0.75-1.25), rotation (+-30 deg, p = 0.6) and horizontal flip (p = 0.5)
as one affine map M of the crop. Joints move by M; teacher heatmaps by the same map on the
heatmap grid (linear part of M, translation / 4: the codec's ``x / stride`` convention), so a
flip mirrors them exactly as the labels, and left/right channels are swapped by the flip index.
MoveNet's joints move by M and are rendered by the same `HeatmapCodec` as the labels.

Loss (FPD, Zhang et al. CVPR 2019): per joint k, ``a_k ||P_k - T_k||^2 + b_k ||P_k - G_k||^2``
with a_k = alpha * w_kd, b_k = (1 - alpha) * w_gt (teacher T, ground truth G). For any a, b >= 0
this equals ``(a + b) ||P - (a T + b G) / (a + b)||^2`` plus a term free of P, so training on one
target-weighted joints MSE against the blended target has exactly FPD's gradient; it needs no
custom train step and runs on any Keras backend. A joint with only one source (neck / head_top:
no COCO teacher joint; LSPET's unlabelled joints, BUFFY's legs: no label) gets that source at
full weight (w = 1), as the issue asks ("joints the teacher lacks keep the ground truth only").
Scratch = alpha 0 (labels only). The loss value reported is the blended MSE (constant dropped).

Usage (device):
    KERAS_BACKEND=jax python benchmarks/gpu_train.py --pack .gpu/pack.npz --out $OUT/runs \\
        --jobs scratch:0,scratch:1,pp256:0 --epochs 40
(distill_gpu.md, 2026-11-26: --epochs 20 --batch 128 --lr 2e-3 --warmup 100 --budget-s 540) and, for a
student fine-tuned from an imported pretrained model (distill_gpu_finetune.md),
    ... --init .gpu/pp_tinypose_128x96_lsp14.keras --epochs 20 --batch 64 --lr 2e-4 --warmup 50
runs the jobs as concurrent processes on the one GPU (after a warm-up process has compiled the
shared train step into JAX's compilation cache, which the jobs then reuse), each writing
RUN.weights.h5, RUN.npz (the same weights by variable path) and RUN.json (per-epoch losses).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import keras
import numpy as np

# the folder holding kdpose_tf: the repository, or KDPOSE_PACKAGE_ROOT (a committed snapshot)
REPO = Path(os.environ.get("KDPOSE_PACKAGE_ROOT") or Path(__file__).resolve().parents[1]).resolve()
sys.path.insert(0, str(REPO))

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec  # noqa: E402
from kdpose_tf.data.transforms import affine_points, get_affine_transform  # noqa: E402
from kdpose_tf.keypoints import LSP14  # noqa: E402
from kdpose_tf.models.losses import per_joint_mse  # noqa: E402
from kdpose_tf.models import PoseEstimator  # noqa: E402  (kdpose_tf.models registers the catalogue)


METHODS = {  # method -> teacher: None (labels only), "movenet" (joints) or heatmap keys averaged
    "scratch": None,
    "movenet": "movenet",
    "pp256": ("pp256",),
    "pp128": ("pp128",),
    "ens": ("pp256", "pp128"),
}
STUDENT = "lite_hrnet_18_coco_256x192"


def build_student(input_size, init=None):
    """The student: Lite-HRNet-18, LSP-14, at `input_size` (same call here and where it is evaluated).

    With `init` (a `.keras` file, e.g. an imported PP-TinyPose with an LSP-14 head written by
    ``gpu_pack.py --student-init``) the student is that model: its architecture and starting weights.
    """
    if init:
        student = keras.saving.load_model(str(init), compile=False)
        size = tuple(int(v) for v in student.input_shape[1:3])
        if size != tuple(int(v) for v in input_size):
            raise ValueError(f"--init {init}: the model's input is {size}, the pack's crops are {tuple(input_size)}")
        return student
    return PoseEstimator.from_preset(
        STUDENT, load_weights=False, keypoint_set="lsp14", num_keypoints=LSP14.num_keypoints,
        input_size=tuple(int(v) for v in input_size),
    )


def blended_joints_mse(y_true, y_pred):
    """Per-sample target-weighted joints MSE; y_true = concat(target (B,h,w,K), weight broadcast)."""
    k = y_pred.shape[-1]
    w = y_true[:, 0, 0, k:]
    return keras.ops.mean(per_joint_mse(y_true[..., :k], y_pred) * w, axis=-1)


class Pack:
    """The pack in memory: decoded crops, labels, teacher outputs (see gpu_pack.py)."""

    def __init__(self, path):
        d = np.load(path)
        self.input_size = tuple(int(v) for v in d["input_size"])
        jpeg, off = d["jpeg"], d["jpeg_offsets"]
        self.images = np.stack([
            cv2.imdecode(jpeg[off[i]:off[i + 1]], cv2.IMREAD_COLOR)[..., ::-1] for i in range(len(off) - 1)
        ])
        self.kp, self.vis = d["kp"], d["vis"]
        self.mn_kp, self.mn_score = d["mn_kp"], d["mn_score"]
        self.hm = {k: (d[f"hm_{k}"], d[f"hm_{k}_scale"], d[f"hm_{k}_weight"]) for k in ("pp256", "pp128")}
        self.flip_index = np.asarray(d["flip_index"])
        self.source = d["source"]

    def __len__(self):
        return len(self.images)

    def teacher_heatmaps(self, i, keys):
        """(h, w, K) float32 mean of the keys' heatmaps of person i, and the (K,) teacher weight."""
        maps = [self.hm[k][0][i].astype(np.float32) * self.hm[k][1][i][:, None, None] for k in keys]
        return np.mean(maps, axis=0).transpose(1, 2, 0), self.hm[keys[0]][2]


class Batches(keras.utils.PyDataset):
    """Augmented batches (x, y): x images float32 [0, 255]; y = concat(blended target, weight)."""

    def __init__(self, pack, method, alpha, batch_size, seed, steps=None, **kwargs):
        super().__init__(**kwargs)
        self.pack, self.teacher, self.alpha = pack, METHODS[method], float(alpha)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.steps = steps or len(pack) // batch_size
        self.codec = HeatmapCodec(input_size=pack.input_size)
        self._order()

    def _order(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.pack)
        reps = -(-self.steps * self.batch_size // n)
        self.order = np.concatenate([rng.permutation(n) for _ in range(reps)])

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1
        self._order()

    def augment_map(self, rng):
        h, w = self.pack.input_size
        s = rng.uniform(0.75, 1.25)
        r = rng.uniform(-30.0, 30.0) if rng.random() < 0.6 else 0.0
        M = get_affine_transform((w / 2.0, h / 2.0), (w * s, h * s), r, (h, w))
        flip = rng.random() < 0.5
        if flip:  # x -> W - 1 - x after the warp
            M = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([M, [0.0, 0.0, 1.0]])
        return M, flip

    def example(self, i, rng):
        p, (h, w) = self.pack, self.pack.input_size
        M, flip = self.augment_map(rng)
        perm = p.flip_index if flip else np.arange(len(p.flip_index))
        image = cv2.warpAffine(p.images[i], M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        gt, w_gt = self.codec.encode(affine_points(p.kp[i], M)[perm], p.vis[i][perm])
        if self.teacher is None or self.alpha == 0.0:
            return image, gt, w_gt
        if self.teacher == "movenet":
            tk = affine_points(p.mn_kp[i], M)[perm]
            teacher, w_kd = self.codec.encode(tk, np.isfinite(tk).all(axis=1).astype(np.float32))
        else:
            hm, w_kd = p.teacher_heatmaps(i, self.teacher)
            hh, hw = self.codec.heatmap_size
            Mh = M.copy()
            Mh[:, 2] /= self.codec.stride  # same linear part; translation in heatmap pixels
            teacher = cv2.warpAffine(hm, Mh, (hw, hh), flags=cv2.INTER_LINEAR, borderValue=0)[..., perm]
            w_kd = w_kd[perm]
        a, b = self.alpha * w_kd, (1.0 - self.alpha) * w_gt
        total = a + b
        target = (a * teacher + b * gt) / np.where(total > 0, total, 1.0)
        return image, target.astype(np.float32), np.maximum(w_kd, w_gt).astype(np.float32)

    def __getitem__(self, step):
        rng = np.random.default_rng([self.seed, self.epoch, step])
        idx = self.order[step * self.batch_size : (step + 1) * self.batch_size]
        xs, ys = [], []
        for i in idx:
            image, target, weight = self.example(i, rng)
            xs.append(image)
            ys.append(np.concatenate([target, np.broadcast_to(weight, target.shape)], axis=-1))
        return np.stack(xs).astype(np.float32), np.stack(ys)


class EpochLog(keras.callbacks.Callback):
    """Per-epoch loss and wall time; stops (after the epoch) once `deadline` (time.time()) passes."""

    def __init__(self, deadline, marker=None, stop_after=None):
        super().__init__()
        self.deadline, self.marker, self.rows, self.t0 = deadline, marker, [], None
        self.stop_after = stop_after or float("inf")

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and not self.rows and self.marker is not None:
            Path(self.marker).touch()  # the train step is compiled (and in the compilation cache)

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, "loss": float(logs["loss"]), "seconds": time.time() - self.t0})
        print(f"epoch {epoch + 1}: loss {logs['loss']:.6f} ({self.rows[-1]['seconds']:.1f} s)", flush=True)
        if time.time() > self.deadline or len(self.rows) >= self.stop_after:
            self.model.stop_training = True


def train_one(args):
    keras.utils.set_random_seed(args.seed)
    pack = Pack(args.pack)
    data = Batches(pack, args.method, args.alpha if METHODS[args.method] else 0.0, args.batch, args.seed,
                   steps=args.steps or None, workers=args.workers, use_multiprocessing=False)
    student = build_student(pack.input_size, args.init)
    net = student.inference_model()
    total = args.epochs * len(data)
    lr = keras.optimizers.schedules.CosineDecay(
        0.0, total - args.warmup, warmup_target=args.lr, warmup_steps=args.warmup, alpha=0.01
    ) if args.warmup else keras.optimizers.schedules.CosineDecay(args.lr, total, alpha=0.01)
    net.compile(optimizer=keras.optimizers.Adam(lr), loss=blended_joints_mse)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = f"{args.method}_s{args.seed}"
    log = EpochLog(args.deadline, marker=out / f"{run}.compiled", stop_after=args.stop_after_epochs)
    t0 = time.time()
    net.fit(data, epochs=args.epochs, callbacks=[log], verbose=0)
    student.save_weights(str(out / f"{run}.weights.h5"))
    # the same weights keyed by variable path, compressed (what comes back from the GPU: 64 MiB a call)
    np.savez_compressed(out / f"{run}.npz", **{v.path: np.asarray(v.numpy()) for v in student.weights})
    record = {
        "run": run, "method": args.method, "seed": args.seed, "alpha": args.alpha if METHODS[args.method] else 0.0,
        "student": Path(args.init).stem if args.init else STUDENT, "init": Path(args.init).name if args.init else None,
        "input_size": list(pack.input_size), "num_people": len(pack),
        "batch": args.batch, "steps_per_epoch": len(data), "epochs_planned": args.epochs,
        "epochs_done": len(log.rows), "lr": args.lr, "warmup": args.warmup, "train_seconds": time.time() - t0,
        "params": int(student.count_params()), "epochs": log.rows,
        "backend": keras.backend.backend(), "keras": keras.__version__,
    }
    (out / f"{run}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "epochs"}), flush=True)


def launch(args):
    """Run every METHOD:SEED of --jobs as its own process, all at once on the one GPU."""
    jobs = [j.split(":") for j in args.jobs.split(",")]
    cache = Path(args.out) / "jax_cache"
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "KERAS_BACKEND": "jax",
           "JAX_COMPILATION_CACHE_DIR": str(cache)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    # Every job has the same train step (same model, loss, optimizer and schedule): a throw-away
    # warm-up process compiles it alone into the cache, is stopped, and then all jobs start together
    # (the same wall time for every job; in the 2026-11-25 run the first real job compiled alone
    # and got a head start, so it was retrained).
    t0 = time.time()
    if args.compile_wait_s > 0:
        _warm_up(args, jobs, env, t0)
    procs = []
    for method, seed in jobs:
        if method not in METHODS:
            raise ValueError(f"--jobs: unknown method {method!r}; expected one of {sorted(METHODS)}")
        logf = open(Path(args.out) / f"{method}_s{seed}.log", "w")
        cmd = _job_cmd(args, method, seed, args.out)
        procs.append((f"{method}_s{seed}", subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)))
    threading.Thread(target=_watch, args=(procs,), daemon=True).start()
    codes = {name: p.wait() for name, p in procs}
    print("exit codes:", codes, flush=True)
    return 0 if not any(codes.values()) else 1


def _warm_up(args, jobs, env, t0):
    """Compile the shared train step in a throw-away process, so the jobs start together from the cache."""
    warm_out = Path(args.out) / "warmup"
    warm = subprocess.Popen(_job_cmd(args, jobs[0][0], "0", warm_out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    marker = warm_out / f"{jobs[0][0]}_s0.compiled"
    while not marker.exists() and warm.poll() is None and time.time() - t0 < args.compile_wait_s:
        time.sleep(2)
    warm.terminate()
    warm.wait()
    print(f"train step compiled in {time.time() - t0:.0f} s; starting {len(jobs)} jobs", flush=True)


def _job_cmd(args, method, seed, out):
    return [sys.executable, __file__, "--pack", args.pack, "--out", str(out), "--method", method, "--seed", str(seed),
            "--epochs", str(args.epochs), "--batch", str(args.batch), "--alpha", str(args.alpha),
            "--lr", str(args.lr), "--warmup", str(args.warmup), "--steps", str(args.steps),
            "--workers", str(args.workers), "--deadline", str(args.deadline),
            "--stop-after-epochs", str(args.stop_after_epochs)] + (["--init", args.init] if args.init else [])


def _watch(procs):
    while any(p.poll() is None for _, p in procs):
        time.sleep(60)
        running = [name for name, p in procs if p.poll() is None]
        print(f"[{time.strftime('%H:%M:%S')}] running: {len(running)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", default="", help="METHOD:SEED,... run concurrently (launcher mode)")
    ap.add_argument("--method", choices=sorted(METHODS), default="scratch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--alpha", type=float, default=0.5, help="FPD KD weight (scratch uses 0)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    ap.add_argument("--steps", type=int, default=0, help="steps per epoch; 0 = one pass over the pack")
    ap.add_argument("--workers", type=int, default=2, help="augmentation threads per process")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="time.time() after which training stops at the end of the epoch")
    ap.add_argument("--stop-after-epochs", type=int, default=0,
                    help="stop after this many epochs with the schedule still planned for --epochs (0 = off)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="launcher: deadline = now + this (0 = none)")
    ap.add_argument("--compile-wait-s", type=float, default=240.0,
                    help="launcher: longest wait for the warm-up compilation before starting the jobs "
                         "(0 = no warm-up: every job compiles its own step, all at once)")
    ap.add_argument("--init", default="", help="a .keras student (architecture + starting weights) to fine-tune")
    args = ap.parse_args()
    if args.budget_s:
        args.deadline = time.time() + args.budget_s
    if args.jobs:
        sys.exit(launch(args))
    train_one(args)


if __name__ == "__main__":
    main()
