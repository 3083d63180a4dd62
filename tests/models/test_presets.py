"""Presets: catalogue builds offline, save_to_preset -> from_preset round trip, malformed presets."""

import json

import numpy as np
import pytest
from harness import run_preset_checks

from kdpose_tf.errors import PresetError
from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
from kdpose_tf.models.pose_estimator import PoseEstimator
from kdpose_tf.models.presets import PRESETS, list_presets

X = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")


def _tiny(block):
    bb = HourglassBackbone(num_stacks=2, filters=8, order=2, num_keypoints=16, block=block, input_shape=(64, 64, 3))
    return PoseEstimator(bb, keypoint_set="mpii16", name=f"tiny_{block}")


def _same(a, b):
    for x, y in zip(a(X), b(X)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("block", ["bottleneck", "inverted_residual"])  # teacher / student kinds
def test_round_trip(tmp_path, block):
    model = _tiny(block)
    model.save_to_preset(tmp_path / "p", metadata={"training_data": "none (test)"})
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["config.json", "metadata.json", "model.weights.h5"]
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["registered_name"] == "kdpose_tf>PoseEstimator" and config["module"] == "kdpose_tf.models.pose_estimator"
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["parameter_count"] == model.count_params() and meta["keypoint_set"] == "mpii16"
    assert meta["input_size"] == [64, 64] and meta["training_data"] == "none (test)" and meta["keras_version"]
    loaded = PoseEstimator.from_preset(str(tmp_path / "p"))
    assert type(loaded) is PoseEstimator and loaded.keypoint_set.name == "mpii16"
    _same(model, loaded)
    backbone = HourglassBackbone.from_preset(str(tmp_path / "p"))  # the estimator's backbone
    np.testing.assert_array_equal(backbone(X)["P2"], model.backbone(X)["P2"])


def test_catalogue_builds_offline_and_local_weights(tmp_path, monkeypatch):
    names = [r["name"] for r in list_presets()]
    for required in ("hourglass_8x256_mpii_256x256", "hourglass_4x128_mpii_256x256", "lshm_2_mpii_256x256",
                     "lshm_4_mpii_256x256", "hrnet_w32_coco_256x192", "hrnet_w48_coco_256x192",
                     "lite_hrnet_18_coco_256x192", "dite_hrnet_18_coco_256x192", "dite_hrnet_30_coco_256x192",
                     "dite_hrnet_18_psa_csppan_coco_256x192"):
        assert required in names and required in PRESETS
    model = PoseEstimator.from_preset("lshm_2_mpii_256x256", load_weights=False, input_size=(64, 64))
    assert model.backbone.filters == 128 and model.backbone.num_stacks == 2 and model.input_size == (64, 64)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 16, 16)] * 2
    monkeypatch.setenv("KDPOSE_PRESETS_DIR", str(tmp_path))
    with pytest.raises(PresetError, match=f"{tmp_path}/lshm_2_mpii_256x256"):
        PoseEstimator.from_preset("lshm_2_mpii_256x256")
    model.save_to_preset(tmp_path / "lshm_2_mpii_256x256")
    _same(model, PoseEstimator.from_preset("lshm_2_mpii_256x256"))
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        PoseEstimator.from_preset("nope")
    with pytest.raises(PresetError, match="HourglassBackbone backbone, not a"):
        from kdpose_tf.models.backbone import Backbone

        class Other(Backbone):
            pass

        Other.from_preset("lshm_2_mpii_256x256", load_weights=False)


def test_other_families_resolve_lazily():
    hrnet = pytest.importorskip("kdpose_tf.models.hrnet.hrnet_backbone")
    bb = hrnet.HRNetBackbone.from_preset("hrnet_w32_coco_256x192", load_weights=False, input_shape=(64, 64, 3))
    assert isinstance(bb, hrnet.HRNetBackbone) and bb.count_params() > 25e6  # W32 is ~28.5 M with its head


def test_malformed_presets(tmp_path):
    model = _tiny("inverted_residual")
    good = tmp_path / "good"
    model.save_to_preset(good)

    def copy(name):
        import shutil

        shutil.copytree(good, tmp_path / name)
        return tmp_path / name

    with pytest.raises(PresetError, match="does not exist"):
        PoseEstimator.from_preset(str(tmp_path / "missing"))
    d = copy("no_config")
    (d / "config.json").unlink()
    with pytest.raises(PresetError, match="no config.json"):
        PoseEstimator.from_preset(str(d))
    d = copy("bad_json")
    (d / "config.json").write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        PoseEstimator.from_preset(str(d))
    d = copy("no_weights")
    (d / "model.weights.h5").unlink()
    with pytest.raises(PresetError, match="no model.weights.h5"):
        PoseEstimator.from_preset(str(d))
    assert PoseEstimator.from_preset(str(d), load_weights=False).count_params() == model.count_params()
    d = copy("corrupt")
    (d / "model.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(PresetError, match="corrupt weights"):
        PoseEstimator.from_preset(str(d))
    d = copy("wrong_arch")
    cfg = json.loads((d / "config.json").read_text())
    cfg["config"]["backbone"]["config"]["filters"] = 16
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="corrupt weights or weights of another architecture"):
        PoseEstimator.from_preset(str(d))
    d = copy("wrong_class")
    model.backbone.save_to_preset(d)
    with pytest.raises(PresetError, match="holds a HourglassBackbone, which cannot be loaded as PoseEstimator"):
        PoseEstimator.from_preset(str(d))
    d = copy("unknown_class")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(registered_name="kdpose_tf>Nope", module="kdpose_tf.nope", class_name="Nope")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="cannot import module 'kdpose_tf.nope'"):
        PoseEstimator.from_preset(str(d))
    with pytest.raises(PresetError, match="keras-hub|cannot fetch"):
        PoseEstimator.from_preset("hf://nobody/nothing")


def test_old_config_without_new_optional_keys_loads(tmp_path):
    model = _tiny("bottleneck")
    d = tmp_path / "old"
    model.save_to_preset(d)
    cfg = json.loads((d / "config.json").read_text())
    for key in ("codec", "feature_level", "input_size", "neck"):
        cfg["config"].pop(key)
    for key in ("preactivation", "psa", "stem_filters", "expansion"):
        cfg["config"]["backbone"]["config"].pop(key)
    (d / "config.json").write_text(json.dumps(cfg))
    _same(model, PoseEstimator.from_preset(str(d)))


def test_whole_catalogue_builds_offline():
    counts = run_preset_checks()
    assert set(counts) == set(PRESETS)
    built = {name for name, n in counts.items() if n is not None}
    assert {"lshm_2_mpii_256x256", "lite_hrnet_18_coco_256x192", "dite_hrnet_18_psa_csppan_coco_256x192"} <= built
    # parameters do not depend on the input size: the published ~1.1 M of Lite-HRNet-18 (+/- 10 %)
    assert abs(counts["lite_hrnet_18_coco_256x192"] / 1.1e6 - 1) < 0.10


def test_catalogue_build_takes_a_model_name_override():
    from kdpose_tf.models.pose_estimator import PoseEstimator

    model = PoseEstimator.from_preset("lite_hrnet_18_coco_256x192", load_weights=False, keypoint_set="lsp14",
                                      num_keypoints=14, input_size=(128, 96), name="my_student")
    assert model.name == "my_student"
    out = model(np.zeros((1, 128, 96, 3), np.float32))
    assert tuple((out[-1] if isinstance(out, (list, tuple)) else out).shape) == (1, 32, 24, 14)


def test_pose_presets_are_checked_when_a_family_registers_them():
    from kdpose_tf.models import preset_utils
    from kdpose_tf.models.lite_hrnet.lite_hrnet_presets import pose_presets

    good = dict(pose_presets["lite_hrnet_18_coco_256x192"])
    before = dict(PRESETS)
    with pytest.raises(PresetError, match=r"pose preset 'x': expected a dict with the keys \['backbone_preset'"):
        preset_utils.register_pose_presets({"x": {k: v for k, v in good.items() if k != "input_size"}})
    with pytest.raises(PresetError, match="pose preset 'x': expected a dict"):
        preset_utils.register_pose_presets({"x": {**good, "input_shape": (64, 64, 3)}})
    with pytest.raises(PresetError, match="names backbone preset 'nope', which is not registered"):
        preset_utils.register_pose_presets({"x": {**good, "backbone_preset": "nope"}})
    with pytest.raises(PresetError, match="'lite_hrnet_18_coco_256x192' is registered twice"):
        preset_utils.register_pose_presets({"lite_hrnet_18_coco_256x192": good})
    assert PRESETS == before and PRESETS is preset_utils.CATALOGUE
    # an entry is listed under the family of its backbone preset's class
    assert PRESETS["lite_hrnet_18_coco_256x192"] == {"family": "lite_hrnet", **good, "builder": None}
    assert {e["family"] for e in PRESETS.values()} == {"hourglass", "hrnet", "lite_hrnet"}


def test_each_family_folder_holds_its_pose_presets():
    from kdpose_tf.models.hourglass import hourglass_presets
    from kdpose_tf.models.hrnet import hrnet_presets
    from kdpose_tf.models.lite_hrnet import lite_hrnet_presets
    from kdpose_tf.models.proposal import build_proposal_student, proposal_presets

    files = (hourglass_presets, hrnet_presets, lite_hrnet_presets, proposal_presets)
    assert [name for f in files for name in f.pose_presets] == list(PRESETS)  # catalogue order = family order
    proposal = PRESETS["dite_hrnet_18_psa_csppan_coco_256x192"]
    assert proposal["builder"] is build_proposal_student and proposal["family"] == "lite_hrnet"
    assert all(e["builder"] is None for n, e in PRESETS.items() if n != "dite_hrnet_18_psa_csppan_coco_256x192")
