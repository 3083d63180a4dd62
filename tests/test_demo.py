"""`kdpose demo --quick`: every stage learns, and the report states its reading (issue 12).

The demo once shipped a teacher that never trained (its Distiller, built first, froze it) and the
suite passed; this test fails when any stage's training loss does not fall or its weights do not move.
"""

import json

from kdpose_tf.cli.demo import NOISE_PCK, STAGES
from kdpose_tf.cli.main import main


def test_quick_demo_every_stage_learns_and_the_report_reads(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert set(report["stages"]) == set(STAGES)
    for name, stage in report["stages"].items():
        loss = stage["loss"]
        assert len(loss) == report["config"]["teacher_epochs" if name == "teacher" else "student_epochs"]
        assert loss[-1] < loss[0], f"{name}: training loss did not fall: {loss}"
        assert stage["max_weight_change"] > 0, f"{name}: weights did not change"
    assert [r["model"] for r in report["rows"]] == [*STAGES, "student (distilled)"]
    assert all(0.0 <= r["pck"] <= 1.0 for r in report["rows"])
    text = (out / "report.md").read_text()
    assert report["reading"] in text
    t, d, sc = (100 * report["rows"][i]["pck"] for i in range(3))
    assert ("Distillation paid off" in report["reading"]) == (t > d >= sc + NOISE_PCK)
    assert ("does NOT show" in report["reading"]) == (not t > d >= sc)
    for image in ("loss_curves.png", "prediction_int8.png", "ground_truth.png", "student_int8.tflite"):
        assert (out / image).stat().st_size > 0
