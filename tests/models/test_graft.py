"""Grafting PSA and the depthwise CSP-PAN onto the imported PP-TinyPose 128x96 (kdpose_tf.models.imported.graft).

One grafted model carries every part (head PSA, block PSA, CSP-PAN) so the import and the ~700-layer
graph are built once: with every gate closed it must give the pretrained heatmaps on real PARSE crops,
and opening each part alone must change them, so each single-part variant (the same code with the
other parts left out) starts at the base model's output too.
"""

import numpy as np
import pytest

from harness import run_layer_checks
from kdpose_tf.models.imported.graft import VARIANTS, block_sites, branch_outputs, graft
from kdpose_tf.models.layers.gated_psa import GatedPSA
from kdpose_tf.models.necks.residual_csp_pan import ResidualCSPPAN
from kdpose_tf.models.summary import count_params

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def base(shared_dir):
    from kdpose_tf.models.imported.openvino_import import import_pose_model

    return import_pose_model("pp_tinypose_128x96", keypoint_set="lsp14")


@pytest.fixture(scope="module")
def crops(shared_dir):
    from kdpose_tf.data.parse import read_parse
    from kdpose_tf.data.pipeline import make_inference_inputs

    samples = list(read_parse(shared_dir / "data" / "parse", split="test", on_bad_sample="skip"))[:4]
    images, _, _ = make_inference_inputs(samples, (128, 96))
    return np.asarray(images, np.float32)


@pytest.fixture(scope="module")
def grafted(base):
    return graft(base, psa_head=True, psa_blocks=True, csp_pan=True)


def _heatmaps(model, x):
    return np.asarray(model(x, training=False)[-1], np.float64)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_the_graph_sites_are_the_highest_resolution_blocks_and_the_branch_outputs(base):
    from kdpose_tf.models.imported.graft import _node_shapes

    nodes, shapes = base.backbone.nodes, _node_shapes(base.backbone)
    depthwise = block_sites(nodes, shapes, (32, 24))
    outputs = block_sites(nodes, shapes, (32, 24), "output")
    assert len(depthwise) == len(outputs) == 16  # 8 modules x 2 blocks on the 1/4 branch; not the stem's unit
    assert all(shapes[s] == (32, 24, 20) for s in depthwise) and all(shapes[s] == (32, 24, 40) for s in outputs)
    branches = branch_outputs(nodes, base.backbone.output_refs["P2"])
    assert [shapes[b] for b in branches] == [(32, 24, 40), (16, 12, 80), (8, 6, 160), (4, 3, 320)]


def test_every_part_starts_at_the_base_heatmaps_and_opening_it_changes_them(base, grafted, crops):
    ref = _heatmaps(base, crops)
    assert np.abs(_heatmaps(grafted, crops) - ref).max() < 1e-4
    assert _trainable(grafted) > _trainable(base) and count_params(grafted) > count_params(base)
    gates = {layer.name: layer for layer in grafted._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, GatedPSA)}
    assert "heatmap_head_psa" in gates and sum(n.endswith("_w_1_psa") for n in gates) == 16
    projections = [layer for layer in grafted.neck._flatten_layers(include_self=False) if "_project" in layer.name]
    assert len(projections) == 4
    rng = np.random.RandomState(0)

    def changed(weights):
        saved = [(v, v.numpy()) for v, _ in weights]
        for v, value in weights:
            v.assign(value)
        try:
            return np.abs(_heatmaps(grafted, crops) - ref).max()
        finally:
            for v, value in saved:
                v.assign(value)

    head = [(gates["heatmap_head_psa"].gate, 1.0)]
    blocks = [(g.gate, 1.0) for n, g in gates.items() if n != "heatmap_head_psa"]
    pan = [(p.kernel, rng.normal(0, 0.05, p.kernel.shape).astype("float32")) for p in projections]
    peak = np.abs(ref).max()
    for part, weights in (("head PSA", head), ("block PSA", blocks), ("CSP-PAN", pan)):
        assert changed(weights) > 0.01 * peak, f"opening the {part} left the heatmaps unchanged"
    assert np.abs(_heatmaps(grafted, crops) - ref).max() < 1e-4  # restored


def test_training_can_open_the_gates(grafted, crops):
    """At init the gates and projections get gradients (a zero-init part that got none would never train)."""
    import tensorflow as tf

    target = np.random.RandomState(1).uniform(0, 1, (len(crops), 32, 24, 14)).astype("float32")
    watched = [layer.gate for layer in grafted._flatten_layers(include_self=False, recursive=True)
               if isinstance(layer, GatedPSA)]
    watched += [layer.kernel for layer in grafted.neck._flatten_layers(include_self=False) if "_project" in layer.name]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((grafted(crops, training=True)[-1] - target) ** 2)
    grads = tape.gradient(loss, watched)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_keras_save_load_gives_the_same_heatmaps(grafted, crops, tmp_path):
    """The route to `kdpose distill --student FILE.keras`: the gates' values travel with the file."""
    from kdpose_tf.models.preset_utils import load_keras_file

    gate = next(layer for layer in grafted.backbone.layers if isinstance(layer, GatedPSA)).gate
    gate.assign(0.25)  # a non-default weight must be saved, not rebuilt from the config's initial value
    try:
        expected = _heatmaps(grafted, crops)
        grafted.save(tmp_path / "grafted.keras")
        loaded = load_keras_file(tmp_path / "grafted.keras")
    finally:
        gate.assign(0.0)
    assert type(loaded.neck) is ResidualCSPPAN and loaded.head.psa_gated and loaded.keypoint_set.name == "lsp14"
    assert np.abs(_heatmaps(loaded, crops) - expected).max() < 1e-6


def test_bad_arguments_say_what_was_received(base):
    with pytest.raises(ValueError, match="nothing to graft"):
        graft(base)
    with pytest.raises(ValueError, match="psa_head.*received 1"):
        graft(base, psa_head=1)
    with pytest.raises(ValueError, match="block_site.*received 'stem'"):
        graft(base, psa_blocks=True, block_site="stem")
    with pytest.raises(ValueError, match="GatedPSA: `gate` must be a finite number, received nan"):
        GatedPSA(gate=float("nan"))
    with pytest.raises(ValueError, match="branches.*received 'branch0'"):
        ResidualCSPPAN(branches="branch0")
    with pytest.raises(ValueError, match="kernel_size must be an odd positive int, received 4"):
        ResidualCSPPAN(kernel_size=4)
    assert set(VARIANTS) == {"base", "psa_head", "psa_blocks", "csp_pan", "psa_csp"}


@pytest.mark.parametrize("layout,mode", [("sequential", "both"), ("parallel", "both"), ("sequential", "channel"),
                                         ("sequential", "spatial")])
def test_gated_psa_is_the_identity_at_gate_0_and_the_reference_psa_at_gate_1(layout, mode):
    from kdpose_tf.models.layers.psa import PolarizedSelfAttention

    x = np.random.RandomState(0).normal(size=(2, 8, 6, 8)).astype("float32")
    gated = GatedPSA(layout=layout, mode=mode, name="g")
    reference = PolarizedSelfAttention(layout=layout, mode=mode, name="r")
    assert np.array_equal(np.asarray(gated(x)), x)
    reference(x)
    reference.set_weights([w.numpy() for w in gated.weights if w is not gated.gate])
    gated.gate.assign(1.0)
    expected = np.asarray(reference(x))
    assert np.abs(expected - x).max() > 0.1  # the reference changes x, so the comparison can fail
    np.testing.assert_allclose(np.asarray(gated(x)), expected, atol=1e-6)


def test_gated_psa_passes_the_layer_harness(tmp_path):
    run_layer_checks(GatedPSA, {"gate": 0.5, "name": "gated_psa"}, (1, 8, 6, 8), tmp_path=tmp_path)


def test_residual_csp_pan_is_the_feature_at_init_and_round_trips():
    rng = np.random.RandomState(0)
    feats = {"P2": rng.normal(size=(1, 16, 12, 8)).astype("float32"),
             "branch0": rng.normal(size=(1, 16, 12, 8)).astype("float32"),
             "branch1": rng.normal(size=(1, 8, 6, 16)).astype("float32")}
    neck = ResidualCSPPAN(branches=("branch0", "branch1"), name="pan")
    assert np.array_equal(np.asarray(neck(feats)["P2"]), feats["P2"])
    for layer in neck.project:
        layer.kernel.assign(rng.normal(0, 0.1, layer.kernel.shape).astype("float32"))
    clone = ResidualCSPPAN.from_config(neck.get_config())
    clone(feats)
    clone.set_weights(neck.get_weights())
    out = np.asarray(neck(feats)["P2"])
    assert np.abs(out - feats["P2"]).max() > 1e-3
    np.testing.assert_allclose(np.asarray(clone(feats)["P2"]), out, atol=1e-6)
    with pytest.raises(ValueError, match=r"branch 'branch1' \(8, 6\) must have the size of the feature"):
        ResidualCSPPAN(branches=("branch1", "branch0"))(feats)


def test_cli_graft_needs_an_output_and_a_part(capsys):
    from kdpose_tf.cli.main import main

    assert main(["graft", "--base", "pp_tinypose_128x96", "--psa-head"]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["graft", "--base", "pp_tinypose_128x96", "--output", "x.keras"]) == 2
    assert "nothing to graft" in capsys.readouterr().err
    assert main(["graft", "--base", "pp_tinypose_128x96", "--variants", "d", "--csp-pan"]) == 2
    assert "--variants DIR writes every variant" in capsys.readouterr().err


def _one_adam_step(layer, inputs, lr=1e-3):
    """Run one Adam step on mean(layer(inputs)) and return the layer (Adam's first step is lr * sign(grad))."""
    import tensorflow as tf
    import keras

    layer(inputs)
    with tf.GradientTape() as tape:
        out = layer(inputs)
        loss = tf.reduce_mean(out["P2"] if isinstance(out, dict) else out)
    grads = tape.gradient(loss, layer.trainable_variables)
    keras.optimizers.Adam(lr).apply_gradients(zip(grads, layer.trainable_variables))
    return layer


def test_step_scale_multiplies_the_gates_first_adam_step_and_keeps_the_maths():
    """gate_scale s: the gate the maps use is s * the weight, so Adam's first step moves it by s * lr (not lr),
    and a layer with gate g computes the same with any s."""
    x = np.random.RandomState(0).normal(size=(2, 8, 6, 8)).astype("float32")
    moved = {}
    for s in (1.0, 50.0):
        layer = _one_adam_step(GatedPSA(gate_scale=s, name=f"g{int(s)}"), x)
        moved[s] = abs(float(np.asarray(layer.gate_value())))
    np.testing.assert_allclose(moved[1.0], 1e-3, rtol=1e-2)
    np.testing.assert_allclose(moved[50.0], 50e-3, rtol=1e-2)
    plain, scaled = GatedPSA(gate=0.3, name="p"), GatedPSA(gate=0.3, gate_scale=50.0, name="s")
    plain(x), scaled(x)
    scaled.set_weights([w.numpy() / 50.0 if w is plain.gate else w.numpy() for w in plain.weights])
    np.testing.assert_allclose(np.asarray(scaled(x)), np.asarray(plain(x)), atol=1e-5)
    assert GatedPSA.from_config(scaled.get_config()).gate_scale == 50.0
    with pytest.raises(ValueError, match="gate_scale` must be a finite number > 0, received 0"):
        GatedPSA(gate_scale=0)


def test_projection_scale_multiplies_the_projections_first_adam_step_and_keeps_the_maths():
    rng = np.random.RandomState(0)
    feats = {"P2": rng.normal(size=(1, 16, 12, 8)).astype("float32"),
             "branch0": rng.normal(size=(1, 16, 12, 8)).astype("float32"),
             "branch1": rng.normal(size=(1, 8, 6, 16)).astype("float32")}
    biases = {}
    for s in (1.0, 50.0):
        neck = _one_adam_step(ResidualCSPPAN(branches=("branch0", "branch1"), projection_scale=s, name=f"n{int(s)}"),
                              feats)
        assert np.array_equal(np.asarray(ResidualCSPPAN(branches=("branch0", "branch1"), projection_scale=s)(feats)["P2"]),
                              feats["P2"])  # the feature itself at init, whatever s
        biases[s] = np.abs(neck.project[0].bias.numpy() * s)  # the bias the neck adds: s * the weight
    np.testing.assert_allclose(biases[1.0], 1e-3, rtol=1e-2)
    np.testing.assert_allclose(biases[50.0], 50e-3, rtol=1e-2)
    plain = ResidualCSPPAN(branches=("branch0", "branch1"), name="p")
    scaled = ResidualCSPPAN(branches=("branch0", "branch1"), projection_scale=50.0, name="s")
    plain(feats), scaled(feats)
    for layer in plain.project:
        layer.kernel.assign(rng.normal(0, 0.1, layer.kernel.shape).astype("float32"))
    scaled.set_weights([w / 50.0 if "project" in v.path else w for v, w in zip(plain.weights, plain.get_weights())])
    np.testing.assert_allclose(np.asarray(scaled(feats)["P2"]), np.asarray(plain(feats)["P2"]), atol=1e-5)
    assert ResidualCSPPAN.from_config(scaled.get_config()).projection_scale == 50.0


def test_graft_step_scale_reaches_every_zero_initialised_part(base):
    model = graft(base, psa_head=True, csp_pan=True, step_scale=20.0)
    gates = [layer for layer in model._flatten_layers(include_self=False, recursive=True) if isinstance(layer, GatedPSA)]
    assert gates and all(g.gate_scale == 20.0 for g in gates) and model.neck.projection_scale == 20.0
    with pytest.raises(ValueError, match="step_scale` must be a finite number > 0, received -1"):
        graft(base, psa_head=True, step_scale=-1)
