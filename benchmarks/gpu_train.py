"""Train students on a lent GPU from packs: several `kdpose train` / `kdpose distill` runs at once on Keras with JAX.

The GPU machine has JAX but no TensorFlow and none of the data; a call carries at most 64 MiB. What
training needs goes there as a pack, written here (CPU, TensorFlow, the teacher's runtime) by the package:

    kdpose distill --teacher pp_tinypose_256x192 --student lite_hrnet_18_coco_256x192 --input-size 128x96 \\
        --data lspet:$SHARED/data/lspet+parse:$SHARED/data/parse:train+... --save-pack .gpu/pp256 \\
        --pack-jpeg-quality 80 --pack-heatmap-stride 4          (about 6 KB a person: 9000 people in 55 MB)

A student started from an imported pretrained model goes as a .keras file
(`kdpose import pp_tinypose_128x96 --keypoint-set lsp14 --output .gpu/pp_tinypose_128x96_lsp14.keras`).
On the GPU machine this launcher starts every job as its own process, all at once on the one GPU
(JAX's compilation cache shared, no memory preallocation), and waits for them:

    python benchmarks/gpu_train.py --out $OUT/runs --student lite_hrnet_18_coco_256x192 --pack pp256=.gpu/pp256 \\
        --jobs scratch:0,scratch:1,pp256:0,pp256:1 -- --epochs 20 --batch-size 128 --lr 2e-3

A job METHOD:SEED runs `kdpose distill --data pack:DIR` for a pack named METHOD, or `kdpose train` on
the first pack's labels for `scratch`; what follows `--` goes to every job. Each job writes OUT/RUN.keras
(the trained student, loadable on any backend), OUT/RUN/ (its run directory: state.json with the
per-epoch losses; rerunning the launcher resumes unfinished jobs), OUT/RUN.log and OUT/RUN.json (the
job: command, pack, losses, wall time), which `distill_gpu.py` scores on PARSE here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def job_command(method, seed, args, packs, extra):
    pack = packs[method] if method != "scratch" else next(iter(packs.values()))
    run = f"{method}_s{seed}"
    out = Path(args.out)
    if method == "scratch":
        cmd = ["train", "--model", args.student]
    else:
        cmd = ["distill", "--student", args.student]
    cmd += ["--data", f"pack:{pack}", "--seed", str(seed), "--run-dir", str(out / run),
            "--output", str(out / f"{run}.keras"), *extra]
    return run, pack, [sys.executable, "-m", "kdpose_tf.cli.main", *cmd]


def record(run, method, seed, pack, cmd, code, seconds, args, extra):
    """RUN.json: the job, its pack and the per-epoch losses of its run directory."""
    meta = json.loads((Path(pack) / "pack.json").read_text())
    state_path = Path(args.out) / run / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"history": {}, "identity": {}}
    history, identity = state["history"], state.get("identity", {})
    student = Path(args.student)
    return {"run": run, "method": method, "seed": seed, "command": cmd[3:], "exit_code": code,
            "student": student.stem, "init": student.name if student.suffix == ".keras" else None,
            "pack": str(pack), "teacher": (meta.get("info") or {}).get("teacher") if method != "scratch" else None,
            "input_size": meta["input_size"], "num_people": meta["num_people"],
            "batch": identity.get("batch_size"), "steps_per_epoch": identity.get("steps_per_epoch"),
            "epochs_planned": state.get("epochs"), "epochs_done": state.get("epoch", 0), "lr": identity.get("lr"),
            "alpha": identity.get("alpha") if method != "scratch" else 0.0, "train_seconds": seconds,
            "augmentation": "none (--no-augment)" if "--no-augment" in extra else
            "the package's training augmentation (`AugmentConfig()`), teacher targets warped with the crop",
            "epochs": [{"epoch": i + 1, **{k: v[i] for k, v in history.items()}}
                       for i in range(len(history.get("loss", [])))],
            "backend": "jax"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for every job's model, run directory, log and record")
    ap.add_argument("--student", required=True, help="catalogue preset name or .keras file (as kdpose takes it)")
    ap.add_argument("--pack", action="append", required=True, metavar="NAME=DIR",
                    help="a pack (kdpose distill --save-pack) and its job name; repeatable")
    ap.add_argument("--jobs", required=True, help="METHOD:SEED,...: METHOD a pack NAME or scratch")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    packs = dict(p.split("=", 1) for p in args.pack)
    jobs = [(m, int(s)) for m, s in (j.split(":") for j in args.jobs.split(","))]
    for method, _ in jobs:
        if method != "scratch" and method not in packs:
            raise SystemExit(f"--jobs: {method!r} is neither scratch nor a --pack name ({sorted(packs)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "JAX_COMPILATION_CACHE_DIR": str(out / "jax_cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    started = []
    for method, seed in jobs:
        run, pack, cmd = job_command(method, seed, args, packs, extra)
        log = open(out / f"{run}.log", "w")
        started.append((run, method, seed, pack, cmd, time.time(),
                        subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
    codes = {}
    for run, method, seed, pack, cmd, t0, proc in started:
        codes[run] = proc.wait()
        rec = record(run, method, seed, pack, cmd, codes[run], time.time() - t0, args, extra)
        (out / f"{run}.json").write_text(json.dumps(rec, indent=1))
        last = rec["epochs"][-1] if rec["epochs"] else {}
        print(f"{run}: exit {codes[run]}, {rec['epochs_done']} epochs, loss {last.get('loss')}", flush=True)
    return 0 if not any(codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
