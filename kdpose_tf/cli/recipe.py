"""`kdpose recipe`: rebuild a shipped preset from the data in ../shared, step by step.

A recipe is data: ``recipe.json`` beside the preset's weights (or any JSON file of the same form)
lists the `kdpose` commands that made it, in order::

    {"name": "lsp14_student_128x96",
     "steps": [{"name": "teacher", "argv": ["train", "--model", "pp_tinypose_256x192", ...,
                                            "--output", "{work}/teacher.keras"],
                "creates": "{work}/teacher.keras"},
               {"name": "labels_only", "argv": [...], "creates": "...", "control": true}, ...]}

``{shared}`` is the shared data folder (KDPOSE_SHARED, default ../shared) and ``{work}`` the
working folder given with ``--work``. Each step runs as its own ``kdpose`` process (a fresh
TensorFlow per step, so memory does not pile up) and is skipped when what it ``creates`` exists:
an interrupted recipe resumes where it stopped, and the training steps inside resume from their
run directories. ``control`` steps (the labels-only runs the model card compares against) run
unless ``--skip-controls``. Wall time per step is printed and kept in ``{work}/recipe_log_<name>.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kdpose_tf.cli.common import CLIError

RECIPE_FILE = "recipe.json"


def load_recipe(spec) -> dict:
    """The recipe of a shipped preset name, a preset directory or a recipe JSON file."""
    from kdpose_tf.models.preset_utils import shipped_presets

    shipped = shipped_presets()
    path = Path(spec)
    if str(spec) in shipped:
        path = shipped[str(spec)] / RECIPE_FILE
    elif path.is_dir():
        path = path / RECIPE_FILE
    if not path.is_file():
        raise CLIError(f"{spec}: no recipe ({path} not found); expected a shipped preset name "
                       f"({', '.join(shipped) or 'none shipped'}), a preset directory or a recipe .json file")
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CLIError(f"{path}: not a readable recipe JSON ({e})") from None
    steps = recipe.get("steps") if isinstance(recipe, dict) else None
    if not isinstance(steps, list) or not steps:
        raise CLIError(f"{path}: field 'steps' must be a non-empty list of {{name, argv, creates}}")
    for i, step in enumerate(steps):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str) and isinstance(step.get("argv"), list)
                and all(isinstance(a, str) for a in step["argv"]) and isinstance(step.get("creates"), str)):
            raise CLIError(f"{path}: steps[{i}] must have 'name' (text), 'argv' (list of text) and 'creates' (text)")
    return recipe


def _fill(text, values):
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise CLIError(f"recipe text {text!r}: unknown or malformed placeholder ({e}); expected {{shared}} or {{work}}")


def run_recipe(args):
    from kdpose_tf.utils.io import write_json
    from kdpose_tf.utils.shared import shared_dir

    recipe = load_recipe(args.recipe)
    try:
        shared = Path(args.shared) if args.shared else shared_dir()
    except FileNotFoundError as e:
        raise CLIError(f"{e}; pass --shared DIR") from None
    work = Path(args.work).resolve()
    values = {"shared": str(Path(shared).resolve()), "work": str(work)}
    steps = [s for s in recipe["steps"] if not (args.skip_controls and s.get("control"))]
    log_path = work / f"recipe_log_{recipe.get('name') or Path(str(args.recipe)).stem}.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    if not args.dry_run:
        work.mkdir(parents=True, exist_ok=True)
    for number, step in enumerate(steps, 1):
        argv = [_fill(a, values) for a in step["argv"]]
        creates = Path(_fill(step["creates"], values))
        head = f"[{number}/{len(steps)}] {step['name']}"
        if creates.exists():
            print(f"{head}: done already ({creates})")
            continue
        print(f"{head}: kdpose {' '.join(argv)}", flush=True)
        if args.dry_run:
            continue
        start = time.time()
        code = subprocess.call([sys.executable, "-m", "kdpose_tf.cli.main", *argv], env=os.environ.copy())
        seconds = time.time() - start
        if code != 0:
            raise CLIError(f"recipe step {step['name']!r} failed (exit {code}) after {seconds / 60:.1f} min; "
                           "fix the cause and rerun the same command: finished steps are kept")
        if not creates.exists():
            raise CLIError(f"recipe step {step['name']!r} finished but did not create {creates}")
        log[step["name"]] = {"seconds": round(seconds, 1), "argv": argv}
        write_json(log_path, log)
        print(f"{head}: {seconds / 60:.1f} min", flush=True)
    total = sum(v["seconds"] for k, v in log.items() if any(s["name"] == k for s in steps))
    if not args.dry_run:
        print(f"recipe {recipe.get('name', args.recipe)}: {total / 60:.1f} min of steps run here; log {log_path}")
