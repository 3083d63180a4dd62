"""Imported pretrained models: `GraphBackbone` and the OpenVINO importer (`kdpose_tf.models.imported`).

The reference for every number is OpenVINO itself running the same file in float32: a hand-built IR
graph that uses each supported op (BGR input included), and PP-TinyPose 128x96 on real PARSE photos.
"""

import keras
import numpy as np
import pytest

from harness import run_model_checks
from kdpose_tf.distillation.heatmap_teacher import HeatmapTeacher
from kdpose_tf.runtimes.model_config import TeacherConfig
from kdpose_tf.keypoints import COCO17, LSP14
from kdpose_tf.models.imported.graph_backbone import GraphBackbone
from kdpose_tf.models.imported.openvino_import import GraphImportError, import_pose_model, retarget_keypoints
from kdpose_tf.models.layers.upsample import ResizeBilinear
from kdpose_tf.models.pose_estimator import PoseEstimator

ov = pytest.importorskip("openvino")
ops = pytest.importorskip("openvino.opset13")


def _node(name, op, inputs, **fields):
    return {"name": name, "op": op, "inputs": inputs, **fields}


def _conv(name, src, filters, k=3, s=1, pad=(1, 1, 1, 1), groups=1, bias=True):
    return _node(name, "conv", [src], filters=filters, kernel=[k, k], strides=[s, s],
                 padding=[[pad[0], pad[1]], [pad[2], pad[3]]], groups=groups, use_bias=bias)


SMALL_GRAPH = [
    _node("norm", "normalize", ["images"], scale=[1 / 58.0, 1 / 57.0, 1 / 57.5], offset=[-2.1, -2.0, -1.8]),
    _conv("stem", "norm", 8, s=2),                       # explicit pad + stride 2: ZeroPadding2D + valid conv
    _node("stem_relu", "relu6", ["stem"]),
    _node("split", "split", ["stem_relu"], sizes=[4, 4]),
    _conv("dw", "split:1", 4, groups=4),                 # depthwise, "same"
    _conv("grouped", "dw", 4, k=1, pad=(0, 0, 0, 0), groups=2, bias=False),
    _node("grouped_relu", "relu", ["grouped"]),
    _node("cat", "concat", ["split:0", "grouped_relu"]),
    _node("shuffle", "shuffle", ["cat"], groups=2),
    _conv("down", "shuffle", 8, s=2),
    _node("up", "upsample", ["down"], size=[2, 2]),
    _node("sum", "add", ["shuffle", "up"]),
    _conv("down2", "sum", 8, k=1, s=2, pad=(0, 0, 0, 0)),
    _node("resize", "resize", ["down2"], size=[16, 12], align_corners=True),
    _node("out", "add", ["sum", "resize"]),
    _node("out_relu", "relu_dw", ["out"]),
]


def test_graph_backbone_passes_the_model_harness(tmp_path):
    """Every node op in one small graph: config round trip, .keras save/load, mixed precision, TFLite parity."""
    figures = run_model_checks(GraphBackbone, {"nodes": SMALL_GRAPH, "outputs": {"P1": "out_relu"},
                                               "input_shape": (32, 24, 3)}, (2, 32, 24, 3), tmp_path=tmp_path)
    assert tuple(figures["model"].output["P1"].shape) == (None, 16, 12, 8)


@pytest.mark.parametrize(
    "nodes, outputs, message",
    [
        ([_node("a", "sigmoid", ["images"])], {"P2": "a"}, "op 'sigmoid'"),
        ([_node("a", "relu", ["missing"])], {"P2": "a"}, "reads 'missing'"),
        ([_node("a", "relu", ["images"])], {"P2": "b"}, "names 'b'"),
        ([_node("a", "relu", ["images"]), _node("a", "relu", ["a"])], {"P2": "a"}, "used twice"),
    ],
)
def test_graph_backbone_rejects_bad_nodes(nodes, outputs, message):
    with pytest.raises(ValueError, match=message):
        GraphBackbone(nodes, outputs, (8, 8, 3))


def test_resize_bilinear_backends_agree():
    """The TF op (what exports) and the matrix form (other backends) are the same align_corners maths."""
    x = np.random.RandomState(0).normal(size=(2, 5, 4, 3)).astype("float32")
    layer = ResizeBilinear((9, 7), align_corners=True)
    from kdpose_tf.models.layers.upsample import _align_corners_matrix

    by_matrix = np.einsum("ih,bhwc,jw->bijc", _align_corners_matrix(5, 9), x, _align_corners_matrix(4, 7))
    np.testing.assert_allclose(np.asarray(layer(x)), by_matrix, atol=1e-5)
    # corners map onto corners
    np.testing.assert_allclose(np.asarray(layer(x))[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6)


def _ov_graph(path, with_sigmoid=False, size=(32, 24)):
    """A small NCHW IR file using every op the importer reads, built for input `size` (same weights at
    every size); returns the file path."""
    rng = np.random.RandomState(1)
    h, w = size

    def const(*shape):
        return ops.constant(rng.normal(scale=0.3, size=shape).astype(np.float32))

    x = ops.parameter([1, 3, h, w], np.float32, name="image")
    y = ops.convolution(x, const(8, 3, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1])  # stride-2 explicit pad
    y = ops.relu(ops.add(y, const(1, 8, 1, 1)))                                 # folded BN bias
    a, b = ops.split(y, ops.constant(np.int64(1)), 2).outputs()
    b = ops.group_convolution(b, const(4, 1, 1, 3, 3), [1, 1], [1, 1], [1, 1], [1, 1])
    b = ops.clamp(ops.add(b, const(1, 4, 1, 1)), 0.0, 6.0)
    y = ops.concat([a, b], 1)
    y = ops.reshape(y, ops.constant(np.array([1, 2, 4, h // 2, w // 2], np.int64)), False)   # channel shuffle
    y = ops.transpose(y, ops.constant(np.array([0, 2, 1, 3, 4], np.int64)))
    y = ops.reshape(y, ops.constant(np.array([1, 8, h // 2, w // 2], np.int64)), False)
    d = ops.add(ops.convolution(y, const(8, 8, 3, 3), [2, 2], [1, 1], [1, 1], [1, 1]), const(1, 8, 1, 1))
    if with_sigmoid:
        d = ops.sigmoid(d)
    near = ops.interpolate(d, ops.constant(np.array([h // 2, w // 2], np.int64)), "nearest", "sizes",
                           axes=ops.constant(np.array([2, 3], np.int64)), coordinate_transformation_mode="asymmetric")
    lin = ops.interpolate(d, ops.constant(np.array([h // 2, w // 2], np.int64)), "linear_onnx", "sizes",
                          axes=ops.constant(np.array([2, 3], np.int64)), coordinate_transformation_mode="align_corners")
    y = ops.add(ops.add(y, near), lin)
    heat = ops.add(ops.convolution(y, const(17, 8, 1, 1), [1, 1], [0, 0], [0, 0], [1, 1]), const(1, 17, 1, 1))
    model = ov.Model([ops.result(heat)], [x], "tiny_pose")
    ov.save_model(model, str(path), compress_to_fp16=False)
    return str(path)


def _ov_reference(path, crops, cfg):
    x = crops[..., ::-1] if cfg.color == "bgr" else crops
    x = ((x * cfg.pixel_scale - np.asarray(cfg.mean)) / np.asarray(cfg.std)).transpose(0, 3, 1, 2)
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(x[i:i + 1].astype(np.float32))[0] for i in range(len(x))]).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("color", ["rgb", "bgr"])
def test_import_matches_openvino_on_a_graph_with_every_op(tmp_path, color):
    path = _ov_graph(tmp_path / "tiny.xml")
    cfg = TeacherConfig(path=path, input_size=(32, 24), color=color, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    model = import_pose_model(cfg)
    kinds = {n["op"] for n in model.backbone.nodes}
    assert kinds == {"normalize", "conv", "relu", "relu6", "split", "concat", "shuffle", "upsample", "resize", "add"}
    # a ReLU reading an add that something else also reads: the delegate-friendly form
    assert {"relu", "relu_dw"} <= {n["op"] for n in import_pose_model("pp_tinypose_128x96").backbone.nodes}
    assert all(n["use_bias"] for n in model.backbone.nodes if n["op"] == "conv")  # every BN add folded
    crops = np.random.RandomState(0).uniform(0, 255, (3, 32, 24, 3)).astype(np.float32)
    ours = np.asarray(model.predict(crops, verbose=0))
    np.testing.assert_allclose(ours, _ov_reference(path, crops, cfg), atol=2e-4, rtol=1e-4)


def test_unsupported_op_names_the_file_and_the_op(tmp_path):
    path = _ov_graph(tmp_path / "sig.xml", with_sigmoid=True)
    with pytest.raises(GraphImportError, match=r"sig\.xml: cannot import Sigmoid .*unsupported op type"):
        import_pose_model(TeacherConfig(path=path, input_size=(32, 24)))
    with pytest.raises(GraphImportError, match="only OpenVINO IR"):
        import_pose_model(TeacherConfig(path=_touch(tmp_path / "m.tflite"), input_size=(32, 24)))


def _touch(path):
    path.write_bytes(b"")
    return str(path)


@pytest.fixture(scope="module")
def pp_tinypose(shared_dir):
    return import_pose_model("pp_tinypose_128x96")


@pytest.fixture(scope="module")
def parse_crops(shared_dir):
    from kdpose_tf.data.parse import read_parse
    from kdpose_tf.data.pipeline import make_inference_inputs

    samples = list(read_parse(shared_dir / "data" / "parse", split="test", on_bad_sample="skip"))[:6]
    crops, _, _ = make_inference_inputs(samples, (128, 96))
    return np.asarray(crops, np.float32)


def test_pp_tinypose_import_matches_openvino_on_real_photos(pp_tinypose, parse_crops):
    """PP-TinyPose 128x96 rebuilt in Keras gives OpenVINO's float32 heatmaps on real PARSE crops."""
    teacher = HeatmapTeacher.from_preset("pp_tinypose_128x96", batch_size=len(parse_crops))
    ref = teacher.predict_crops(parse_crops)
    ours = np.asarray(pp_tinypose.predict(parse_crops, verbose=0))
    assert ours.shape == ref.shape == (len(parse_crops), 32, 24, 17)
    assert np.abs(ours - ref).max() < 1e-4, np.abs(ours - ref).max()
    assert ref.max() > 0.5  # real people: real peaks, not a comparison of near-zero maps
    assert sum(int(np.prod(w.shape)) for w in pp_tinypose.trainable_weights) == 1_300_177  # + 320 fixed relu_dw ones


def test_retarget_keeps_shared_joints_and_serializes(pp_tinypose, parse_crops, tmp_path):
    lsp = retarget_keypoints(pp_tinypose, "lsp14")
    assert lsp.keypoint_set.name == "lsp14" and lsp.outputs[-1].shape[-1] == 14
    coco = np.asarray(pp_tinypose.predict(parse_crops[:2], verbose=0))
    ours = np.asarray(lsp.predict(parse_crops[:2], verbose=0))
    for i, name in enumerate(LSP14.names):
        if name in COCO17.names:
            np.testing.assert_allclose(ours[..., i], coco[..., COCO17.index(name)], atol=1e-5)
        else:  # neck, head_top: the head's fresh initialisation, near zero
            assert np.abs(ours[..., i]).max() < 0.1
    lsp.save_to_preset(tmp_path / "preset")
    keras.backend.clear_session()
    again = PoseEstimator.from_preset(str(tmp_path / "preset"))
    assert isinstance(again.backbone, GraphBackbone)
    np.testing.assert_allclose(np.asarray(again.predict(parse_crops[:2], verbose=0)), ours, atol=1e-5)


def test_delegate_friendly_relus_keep_the_maths(pp_tinypose, parse_crops):
    """ReLUs the converter cannot fuse become fixed 1x1 depthwise convs (relu_dw); weights saved from the
    plain graph move over by layer name and give the same heatmaps."""
    from kdpose_tf.models.imported.openvino_import import copy_weights_by_name

    plain = import_pose_model("pp_tinypose_128x96", delegate_friendly=False)
    assert "relu_dw" not in {n["op"] for n in plain.backbone.nodes}
    assert sum(n["op"] == "relu_dw" for n in pp_tinypose.backbone.nodes) == 8
    rng = np.random.RandomState(0)
    plain.head.final_conv.set_weights([w + rng.normal(scale=0.01, size=w.shape).astype(np.float32)
                                       for w in plain.head.final_conv.get_weights()])
    fresh = import_pose_model("pp_tinypose_128x96")
    assert copy_weights_by_name(plain, fresh) > 200
    np.testing.assert_allclose(np.asarray(fresh.predict(parse_crops[:2], verbose=0)),
                               np.asarray(plain.predict(parse_crops[:2], verbose=0)), atol=1e-5)


def test_from_preset_imports_pretrained_models(shared_dir):
    model = PoseEstimator.from_preset("pp_tinypose_128x96", keypoint_set="lsp14")
    assert isinstance(model.backbone, GraphBackbone) and model.keypoint_set.name == "lsp14"
    assert model.input_size == (128, 96)
    from kdpose_tf.errors import PresetError

    with pytest.raises(PresetError, match="num_stages"):
        PoseEstimator.from_preset("pp_tinypose_128x96", num_stages=2)


def test_from_preset_takes_what_the_pretrained_model_predicate_takes(shared_dir, tmp_path, pp_tinypose, parse_crops):
    """One predicate (`is_pretrained_source`) decides what is a model of another framework; from_preset
    imports every such argument through the registered loader: an .xml file and a folder with
    teacher.json, not only a catalogue name (both were 'not a preset directory')."""
    import json

    from kdpose_tf.errors import PresetError
    from kdpose_tf.runtimes.pretrained_models import is_pretrained_source

    xml = shared_dir / "models" / "pp_tinypose_128x96" / "model.xml"
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "teacher.json").write_text(json.dumps({"path": str(xml), "input_size": [128, 96]}))
    ref = np.asarray(pp_tinypose.predict(parse_crops[:2], verbose=0))
    for spec in (str(xml), str(folder)):
        assert is_pretrained_source(spec)
        model = PoseEstimator.from_preset(spec)
        np.testing.assert_allclose(np.asarray(model.predict(parse_crops[:2], verbose=0)), ref, atol=1e-5)
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"")
    assert is_pretrained_source(tflite, tflite=True) and not is_pretrained_source(tflite)
    with pytest.raises(PresetError):  # a LiteRT file is a teacher, not an import source
        PoseEstimator.from_preset(str(tflite))


def test_import_at_another_input_size_matches_the_graph_built_there(tmp_path):
    """Weights imported from the 32x24 graph, built at 64x48, give what OpenVINO computes with the same
    weights in a graph made at 64x48 (the bilinear resize's fixed size is scaled with the input)."""
    small = _ov_graph(tmp_path / "small.xml")
    big = _ov_graph(tmp_path / "big.xml", size=(64, 48))
    cfg = TeacherConfig(path=small, input_size=(32, 24))
    model = import_pose_model(cfg, input_size=(64, 48))
    assert model.input_size == (64, 48) and model.outputs[-1].shape[1:] == (32, 24, 17)
    assert [n["size"] for n in model.backbone.nodes if n["op"] == "resize"] == [[32, 24]]
    crops = np.random.RandomState(0).uniform(0, 255, (2, 64, 48, 3)).astype(np.float32)
    ref = _ov_reference(big, crops, TeacherConfig(path=big, input_size=(64, 48)))
    np.testing.assert_allclose(np.asarray(model.predict(crops, verbose=0)), ref, atol=2e-4, rtol=1e-4)
    with pytest.raises(GraphImportError, match=r"small\.xml: input_size 30x24 must be a multiple of 4"):
        import_pose_model(cfg, input_size=(30, 24))
    with pytest.raises(ValueError, match="positive ints"):
        import_pose_model(cfg, input_size=(64,))


def test_pp_tinypose_at_160x128(shared_dir):
    model = PoseEstimator.from_preset("pp_tinypose_128x96", input_size=(160, 128))
    assert model.input_size == (160, 128) and model.outputs[-1].shape[1:] == (40, 32, 17)
    assert sorted(tuple(n["size"]) for n in model.backbone.nodes if n["op"] == "resize") == [(10, 8), (20, 16), (40, 32)]
    with pytest.raises(GraphImportError, match=r"input_size 150x100 must be a multiple of 32"):
        import_pose_model("pp_tinypose_128x96", input_size=(150, 100))


def test_int8_qat_of_the_imported_graph_converts(pp_tinypose, parse_crops, tmp_path):
    """PP-TinyPose's split -> shuffle -> concat chains and its `x + x` adds get one FakeQuant range per
    same-scale chain, so the converter takes the QAT model (it refused it with per-tensor ranges)."""
    from kdpose_tf.export.qat import ActivationFakeQuant, quantize_model
    from kdpose_tf.runtimes.flatbuffer import model_tensors
    from kdpose_tf.export.tflite import export_tflite

    qat = quantize_model(pp_tinypose, calibration_data=parse_crops)
    assert sum(isinstance(l, ActivationFakeQuant) and l.shared for l in qat.layers) >= 20
    path = export_tflite(qat, tmp_path / "qat.tflite", quantize="int8-qat", representative_data=parse_crops)
    assert {t["dtype"] for t in model_tensors(path)} <= {"INT8", "UINT8", "INT32"}
