"""`kdpose recipe`: the steps of a recipe file run as kdpose commands, in order, and a rerun skips what exists."""

import json
import subprocess
import sys

import pytest

from kdpose_tf.cli.main import main


def _recipe(tmp_path, steps):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"name": "tiny", "steps": steps}))
    return path


def test_runs_the_steps_then_skips_them_on_a_rerun(tmp_path, shared_dir, capsys):
    recipe = _recipe(tmp_path, [{
        "name": "score", "creates": "{work}/parse_train.json",
        "argv": ["evaluate", "--model", "pp_tinypose_128x96", "--data", "parse:{shared}/data/parse:train",
                 "--json-out", "{work}/parse_train.json"],
    }])
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "kdpose_tf.cli.main", "recipe", str(recipe), "--work", str(work),
           "--shared", str(shared_dir)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((work / "parse_train.json").read_text())
    assert report["num_samples"] == 100 and report["pck"]["mean"] > 0.5  # PP-TinyPose on PARSE train
    log = json.loads((work / "recipe_log_tiny.json").read_text())
    assert log["score"]["seconds"] > 0 and "--json-out" in log["score"]["argv"]
    assert main(cmd[3:]) == 0 and "done already" in capsys.readouterr().out  # nothing runs again


def test_a_failing_step_stops_with_one_line(tmp_path, shared_dir, capsys):
    recipe = _recipe(tmp_path, [{"name": "broken", "creates": "{work}/never", "argv": ["evaluate", "--model",
                                 "no_such_model_anywhere", "--data", "parse:{shared}/data/parse:train"]}])
    code = main(["recipe", str(recipe), "--work", str(tmp_path / "w"), "--shared", str(shared_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "recipe step 'broken' failed" in err and "rerun the same command" in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable recipe JSON"),
    ('{"steps": []}', "field 'steps' must be a non-empty list"),
    ('{"steps": [{"name": "a", "argv": "train"}]}', "steps[0] must have"),
    ('{"steps": [{"name": "a", "argv": ["{nowhere}"], "creates": "x"}]}', "unknown or malformed placeholder"),
])
def test_bad_recipe_files_get_one_line(tmp_path, shared_dir, capsys, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    assert main(["recipe", str(path), "--work", str(tmp_path / "w"), "--shared", str(shared_dir), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_shipped_presets_carry_a_recipe_that_names_real_commands(capsys, shared_dir, tmp_path):
    from kdpose_tf.cli.main import COMMANDS
    from kdpose_tf.cli.recipe import load_recipe
    from kdpose_tf.models.preset_utils import shipped_presets

    for name in shipped_presets():
        recipe = load_recipe(name)
        assert all(step["argv"][0] in COMMANDS for step in recipe["steps"])
        assert main(["recipe", name, "--work", str(tmp_path / name), "--shared", str(shared_dir), "--dry-run"]) == 0
        assert "kdpose distill" in capsys.readouterr().out
