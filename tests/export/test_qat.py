"""Keras-3-native QAT: fake-quant clone, BN folding, quantization-aware distillation, int8-qat export."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdpose_tf.export.qat import ActivationFakeQuant, QuantConv2D, QuantDepthwiseConv2D, quantize_model, \
    refresh_weight_ranges
from kdpose_tf.runtimes.flatbuffer import model_tensors
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from tests.export.test_tflite import coco_crops, tiny_pose_model


@pytest.fixture(scope="module")
def float_model_and_crops(data_dir):
    keras.utils.set_random_seed(0)
    model = tiny_pose_model()
    rng = np.random.default_rng(1)
    model.get_layer("stem_bn").set_weights([rng.uniform(0.5, 1.5, 8), rng.uniform(-0.2, 0.2, 8),
                                           rng.uniform(-0.2, 0.2, 8), rng.uniform(0.5, 2.0, 8)])
    return model, coco_crops(data_dir, n=24)


def test_weight_fake_quant_is_per_channel_symmetric_narrow():
    layer = QuantConv2D(3, 1, name="qc")
    layer.build((None, 4, 4, 2))
    w = np.array([[[[0.5, -0.01, 2.0], [0.25, 0.013, -1.0]]]], np.float32)  # (1,1,2,3)
    layer.kernel.assign(w)
    layer.refresh_ranges()
    q = layer.quantized_kernel().numpy()
    step = np.abs(w).max(axis=(0, 1, 2)) / 127.0  # hand-computed: scale = max|w| / 127 per channel
    # FakeQuant rounds half up (floor(v + 0.5)): -1.0 / (2 / 127) = -63.5 -> -63
    np.testing.assert_allclose(q, np.floor(w / step + 0.5) * step, atol=1e-6)


def test_clone_structure_and_bn_folding(float_model_and_crops):
    model, crops = float_model_and_crops
    qat = quantize_model(model)
    names = [l.name for l in qat.layers]
    assert "stem_bn" not in names  # folded
    assert isinstance(qat.get_layer("stem_conv"), QuantConv2D) and isinstance(qat.get_layer("dw"), QuantDepthwiseConv2D)
    assert "stem_relu_act_quant" in names and "stem_conv_act_quant" not in names  # conv+relu fused: one range
    assert "input_act_quant" in names
    # folded conv == conv followed by BN (inference statistics), checked with the float layers
    bn = model.get_layer("stem_bn")
    conv = model.get_layer("stem_conv")
    x = model.get_layer("normalize")(crops[:2])
    ref = bn(conv(x), training=False).numpy()
    qc = qat.get_layer("stem_conv")
    folded = tf.nn.conv2d(x, qc.kernel, 2, "SAME") + qc.bias
    np.testing.assert_allclose(folded.numpy(), ref, atol=1e-4)


def test_qat_close_to_float_before_training(float_model_and_crops):
    model, crops = float_model_and_crops
    qat = quantize_model(model, calibration_data=crops[:16])
    ref = model.predict(crops[16:], verbose=0)
    got = qat.predict(crops[16:], verbose=0)
    # 8-bit fake quant of ~10 tensors: error a few % of the output range
    assert np.abs(got - ref).max() < 0.05 * (ref.max() - ref.min())
    assert np.abs(got - ref).mean() < 0.01 * (ref.max() - ref.min())


def test_quantization_aware_distillation_and_int8_export(float_model_and_crops, tmp_path):
    """Float teacher supervises the fake-quant student through the project's Distiller (2 steps);
    the exported int8-qat model then matches the fake-quant Keras model."""
    model, crops = float_model_and_crops
    distiller_mod = pytest.importorskip("kdpose_tf.distillation.distiller")
    keras.utils.set_random_seed(2)
    teacher = tiny_pose_model(name="teacher")
    student = quantize_model(model, calibration_data=crops[:16])
    ranges_before = [l.max_var.numpy() for l in student.layers if isinstance(l, ActivationFakeQuant)]
    kernel_before = student.get_layer("pw").kernel.numpy().copy()
    distiller = distiller_mod.Distiller(teacher, student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = crops[:8]
    targets = {"heatmaps": teacher.predict(images, verbose=0), "target_weight": np.ones((8, 17), np.float32)}
    hist = distiller.fit(images, targets, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert not np.allclose(student.get_layer("pw").kernel.numpy(), kernel_before)  # gradients flowed through FQ
    ranges_after = [l.max_var.numpy() for l in student.layers if isinstance(l, ActivationFakeQuant)]
    assert not np.allclose(ranges_before, ranges_after)  # EMA ranges updated in training
    refresh_weight_ranges(student)

    path = export_tflite(student, tmp_path / "qat.tflite", quantize="int8-qat")
    tensors = model_tensors(path)
    assert all(t["dtype"] in ("INT8", "UINT8", "INT32") for t in tensors)
    runner = TFLiteRunner(path)
    assert runner.input_details["dtype"] == np.uint8
    got = runner(crops[16:])
    ref = student.predict(crops[16:], verbose=0)
    step = runner.output_details["quantization"][0]
    # Tolerance: the int8 kernels requantise after every op (rounding differs from float fake
    # quant by up to 1 step per op), so allow 4 output steps max and 0.5 step on average.
    assert np.abs(got - ref).max() <= 4 * step + 1e-6
    assert np.abs(got - ref).mean() <= 0.5 * step


def test_qat_of_a_nested_shuffle_student_matches_its_int8_export(data_dir, tmp_path):
    """A real student (Lite-HRNet-18 mobile: BatchNorm, channel split / shuffle / concat, backbone nested
    in a PoseEstimator). Its layers are called in two graphs once flattened, which once hid every
    BatchNorm from folding and doubled each consumer list (the int8-qat file then missed the float
    model by 97 % RMS); concat chains must share one range or the converter refuses them."""
    from kdpose_tf.models.pose_estimator import PoseEstimator

    keras.utils.set_random_seed(0)
    model = PoseEstimator.from_preset("lite_hrnet_18_mobile_coco_128x96", load_weights=False)
    from kdpose_tf.data.parse import read_parse
    from kdpose_tf.data.pipeline import make_inference_inputs

    samples = list(read_parse(data_dir / "parse", split="train", on_bad_sample="skip"))[:24]
    crops = np.asarray(make_inference_inputs(samples, (128, 96))[0], np.float32)
    qat = quantize_model(model, calibration_data=crops[:16])
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in qat.layers)  # all folded
    shared = {id(l) for l in qat.layers if isinstance(l, ActivationFakeQuant) and l.shared}
    assert shared  # one range per concat chain
    path = export_tflite(qat, tmp_path / "lite_qat.tflite", quantize="int8-qat", representative_data=crops[:16])
    ref = np.asarray(model.inference_model()(crops[16:]))
    sim = np.asarray(qat(crops[16:], training=False))
    got = TFLiteRunner(path)(crops[16:])

    def rel(a, b):
        return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a ** 2)))

    assert rel(ref, sim) < 0.25 and rel(ref, got) < 0.25 and rel(sim, got) < 0.25, (rel(ref, sim), rel(ref, got))


def test_int8_qat_converter_refusal_is_explained(monkeypatch, float_model_and_crops, tmp_path):
    import kdpose_tf.export.tflite as tflite_mod

    class Refusing:
        def convert(self):
            raise RuntimeError("error: 'tfl.reshape' op quantization parameters violate the same scale constraint")

    monkeypatch.setattr(tflite_mod, "_configure", lambda converter, opts: Refusing())
    model, crops = float_model_and_crops
    with pytest.raises(ValueError, match=r"one int8 scale.*quantize='int8'.*same scale constraint"):
        export_tflite(quantize_model(model, calibration_data=crops[:8]), tmp_path / "x.tflite", quantize="int8-qat")


def _numpy_fake_quant(x, lo, hi):
    """TF's fake_quant_with_min_max_vars written out (8 bit, nudged zero point), the reference for "mse"."""
    scale = (hi - lo) / 255.0
    zero = min(max(round(-lo / scale), 0), 255)
    nlo, nhi = -zero * scale, (255 - zero) * scale
    return np.floor((np.clip(x, nlo, nhi) - nlo) / scale + 0.5) * scale + nlo


def test_mse_clip_range_is_the_least_error_clip_of_the_grid(float_model_and_crops):
    """On a real activation (the tiny model's first ReLU on COCO crops) and on a heavy-tailed sample, the
    range `mse_clip_range` picks has the least squared error of every clip on the grid, by an
    independent numpy quantizer; a min / max range is never beaten by clipping a uniform tensor."""
    from kdpose_tf.export.qat import CLIP_GRID, mse_clip_range

    model, crops = float_model_and_crops
    relu = keras.Model(model.inputs[0], model.get_layer("stem_relu").output)(crops[:4]).numpy().ravel()
    laplace = np.random.default_rng(0).laplace(0.0, 2.0, 100_000).astype(np.float32)  # max |v| ~ 23
    for values in (relu, laplace):
        lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        errors = {f: np.mean((_numpy_fake_quant(values, lo * f, hi * f) - values) ** 2) for f in CLIP_GRID}
        got_lo, got_hi = mse_clip_range(values, lo, hi)
        got = np.mean((_numpy_fake_quant(values, got_lo, got_hi) - values) ** 2)
        assert got <= min(errors.values()) * (1 + 1e-4) + 1e-12
        assert got_lo / min(lo, -1e-12) == pytest.approx(got_hi / hi, rel=1e-6) or got_lo == lo == 0.0  # one f
    assert mse_clip_range(laplace, float(laplace.min()), float(laplace.max()))[1] < 0.95 * laplace.max()
    uniform = np.linspace(0.0, 6.0, 4096, dtype=np.float32)
    assert mse_clip_range(uniform, 0.0, 6.0) == (0.0, 6.0)


def test_mse_ranges_are_inside_min_max_frozen_and_saved(float_model_and_crops, tmp_path):
    model, crops = float_model_and_crops
    minmax = quantize_model(model, calibration_data=crops[:16])
    mse = quantize_model(model, calibration_data=crops[:16], range_method="mse")
    wide = {l.name: (l.min_var.numpy(), l.max_var.numpy()) for l in minmax.layers if isinstance(l, ActivationFakeQuant)}
    quants = [l for l in mse.layers if isinstance(l, ActivationFakeQuant)]
    assert all(l.frozen for l in quants) and not any(l.frozen for l in minmax.layers if isinstance(l, ActivationFakeQuant))
    clipped = 0
    for l in quants:
        lo, hi = wide[l.name]
        assert lo - 1e-6 <= l.min_var.numpy() <= 0.0 <= l.max_var.numpy() <= hi + 1e-6, l.name
        clipped += int(l.max_var.numpy() < hi - 1e-6)
    assert clipped > 0  # real crops: some tensor has a tail worth clipping
    before = [l.max_var.numpy() for l in quants]
    mse(crops[:4], training=True)  # a training pass: frozen ranges take no moving average
    assert [l.max_var.numpy() for l in quants] == before
    mse.save(tmp_path / "mse.keras")
    back = keras.saving.load_model(tmp_path / "mse.keras")
    assert all(l.frozen for l in back.layers if isinstance(l, ActivationFakeQuant))
    with pytest.raises(ValueError, match="range_method must be one of .*got 'kl'"):
        quantize_model(model, range_method="kl")


def test_equalized_qat_clone_keeps_the_callers_weights(float_model_and_crops, tmp_path):
    """`quantization_aware_finetune` equalizes before cloning: the clone holds rescaled weights, the float
    model (the teacher, and the caller's) gets its own back, and the clone still computes the float function."""
    from kdpose_tf.distillation.qat_finetune import quantization_aware_finetune

    model, crops = float_model_and_crops
    weights = [w.copy() for w in model.get_weights()]
    plain = quantize_model(model, calibration_data=crops[:16], range_method="mse")
    qat = quantization_aware_finetune(model, [], None, 0, crops[:16], equalize=True, range_method="mse")
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert not np.allclose(qat.get_layer("dw").kernel.numpy(), plain.get_layer("dw").kernel.numpy())  # rescaled
    ref = model.predict(crops[16:], verbose=0)
    got = qat.predict(crops[16:], verbose=0)
    assert np.abs(got - ref).mean() < 0.01 * (ref.max() - ref.min())
    path = export_tflite(qat, tmp_path / "eq_qat.tflite", quantize="int8-qat", sidecar=False)
    step = TFLiteRunner(path).output_details["quantization"][0]
    assert np.abs(TFLiteRunner(path)(crops[16:]) - got).mean() <= 0.5 * step  # the file computes the clone
