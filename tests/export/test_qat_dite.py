"""QAT of graphs with BatchNorms that follow no conv (a sum, a gate), conv + sigmoid attention and
named multi-output layers: Dite-HRNet and the proposal student.

Before this support, `quantize_model` refused the proposal student (its CSP-PAN neck returns a dict)
and the int8-qat conversion of a Dite-HRNet left float tensors (GatedBatchNormalization's gate
product had no range)."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kdpose_tf.export.qat import ActivationFakeQuant, QuantDepthwiseConv2D, calibrate, quantize_model
from kdpose_tf.runtimes.flatbuffer import model_tensors
from kdpose_tf.runtimes.litert import TFLiteRunner
from kdpose_tf.export.tflite import export_tflite
from kdpose_tf.models.layers.norm import GatedBatchNormalization
from tests.export.test_tflite import coco_crops

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_weights import trained_like  # noqa: E402


def _rel(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a ** 2)))


def gated_model():
    """Dite-style pieces: conv sum -> BN -> ReLU; GAP -> conv + sigmoid gate -> BN(x * gate)."""
    inp = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    a = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="k0")(x)
    b = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="k1")(x)
    s = keras.layers.Add(name="sum")([a, b])
    s = keras.layers.BatchNormalization(name="sum_bn")(s)
    s = keras.layers.ReLU(name="sum_relu")(s)
    g = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(s)
    g = keras.layers.Conv2D(8, 1, activation="sigmoid", name="gate")(g)
    y = GatedBatchNormalization(name="gated_bn")([s, g])
    return keras.Model(inp, keras.layers.Conv2D(4, 1, name="out")(y), name="gated")


@pytest.fixture(scope="module")
def crops(data_dir):
    return coco_crops(data_dir, n=24, size=32)


def test_batchnorms_after_no_conv_run_as_1x1_depthwise_convs(crops):
    keras.utils.set_random_seed(0)
    model = gated_model()
    trained_like(model, seed=1)
    qat = quantize_model(model, calibration_data=crops[:16])
    for name in ("sum_bn", "gated_bn"):  # same names, now per-channel scale + bias convs
        assert isinstance(qat.get_layer(name), QuantDepthwiseConv2D), name
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in qat.layers)
    names = {layer.name for layer in qat.layers}
    # ranges TFLite needs: the gate product, the conv output before its sigmoid (CONV_2D, then LOGISTIC)
    assert {"gated_bn_gate_mul", "gated_bn_gate_mul_act_quant", "gate_preact_quant", "gate_activation"} <= names
    # the 1x1 depthwise conv computes the BN's inference maths; its one weight per channel is on the int8 grid
    x = model.get_layer("sum")([model.get_layer("k0").output, model.get_layer("k1").output])
    probe = keras.Model(model.inputs, x)(crops[:4])
    bn = model.get_layer("sum_bn")
    np.testing.assert_allclose(qat.get_layer("sum_bn")(probe).numpy(), bn(probe, training=False).numpy(),
                               rtol=1e-5, atol=1e-5 * float(np.abs(probe).max()))
    ref = model.predict(crops[16:], verbose=0)
    sim = qat.predict(crops[16:], verbose=0)
    assert _rel(ref, sim) < 0.05, _rel(ref, sim)


def test_gated_qat_model_trains_and_exports_full_integer(crops, tmp_path):
    keras.utils.set_random_seed(0)
    model = gated_model()
    trained_like(model, seed=2)
    qat = quantize_model(model, calibration_data=crops[:16])
    kernel = qat.get_layer("gated_bn").kernel.numpy().copy()
    qat.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    qat.fit(crops[:16], model.predict(crops[:16], verbose=0) + 0.1, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(qat.get_layer("gated_bn").kernel.numpy(), kernel)  # gradients reach the BN's scale
    calibrate(qat, crops[:16])
    path = export_tflite(qat, tmp_path / "gated_qat.tflite", quantize="int8-qat", sidecar=False)
    assert all(t["dtype"] in ("INT8", "UINT8", "INT32") for t in model_tensors(path))  # no representative set needed
    got = TFLiteRunner(path)(crops[16:])
    sim = qat.predict(crops[16:], verbose=0)
    step = TFLiteRunner(path).output_details["quantization"][0]
    assert np.abs(got - sim).max() <= 6 * step + 1e-6 and np.abs(got - sim).mean() <= step


def test_int8_qat_of_the_proposal_student(data_dir, tmp_path):
    """A small proposal student (Dite-HRNet + PSA + CSP-PAN neck with dict outputs): QAT clone, int8-qat
    file under XNNPACK close to the float model. PSA's internals (LayerNorm, softmax) are a composite
    layer: the converter calibrates them on the representative set."""
    from kdpose_tf.models.proposal.proposal_student import build_proposal_student

    keras.utils.set_random_seed(0)
    model = build_proposal_student(input_shape=(64, 64, 3), widths=(16, 32, 64, 128), stage_modules=(1, 1, 1),
                                   blocks_per_module=1)
    trained_like(model, seed=3)
    images = coco_crops(data_dir, n=32, size=64)
    qat = quantize_model(model, calibration_data=images[:24])
    assert any(layer.name.endswith("_gcm_bn_gate_mul") for layer in qat.layers)  # GCM: BN(x * gate)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in qat.layers)
    assert any(layer.name.endswith("_act_quant_P3") for layer in qat.layers if isinstance(layer, ActivationFakeQuant))
    path = export_tflite(qat, tmp_path / "student_qat.tflite", quantize="int8-qat", representative_data=images[:24],
                         sidecar=False)
    assert all(t["dtype"] in ("INT8", "UINT8", "INT32") for t in model_tensors(path))
    ref = np.asarray(model.inference_model()(images[24:]))
    sim = np.asarray(qat(images[24:], training=False))
    got = TFLiteRunner(path)(images[24:])
    assert _rel(ref, sim) < 0.1 and _rel(ref, got) < 0.1 and _rel(sim, got) < 0.1, (_rel(ref, sim), _rel(ref, got))


def test_qat_clone_names_frozen_bn_and_keras_round_trip(crops, tmp_path):
    """Inserted layers never take a name the model already uses; a frozen BN stays frozen as a conv; a
    sigmoid followed by a ReLU keeps its own range (LOGISTIC fuses nothing); the .keras file reloads with
    its kernel ranges."""
    inp = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
    y = keras.layers.Conv2D(8, 3, padding="same", name="b")(inp)
    s = keras.layers.BatchNormalization(name="s_bn", trainable=False)(keras.layers.Add(name="s")([x, y]))
    g = keras.layers.Conv2D(8, 1, activation="sigmoid", name="gate")(s)
    g = keras.layers.ReLU(name="gate_activation")(g)  # the name the split sigmoid would take
    model = keras.Model(inp, keras.layers.Multiply(name="out")([s, g]))
    trained_like(model, seed=4)
    qat = quantize_model(model, calibration_data=crops[:8])
    names = [layer.name for layer in qat.layers]
    assert len(names) == len(set(names)) and "gate_activation_1" in names
    assert not qat.get_layer("s_bn").trainable
    assert "gate_act_quant" in names  # range after the sigmoid although a ReLU follows
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("gate").kernel_range.numpy(), qat.get_layer("gate").kernel_range.numpy())
    np.testing.assert_allclose(loaded.predict(crops[8:12], verbose=0), qat.predict(crops[8:12], verbose=0), atol=1e-6)
