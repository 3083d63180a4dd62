"""The docstring examples of the modules listed here run (each module's doctests, like --doctest-modules).

Listed: every module of the package with an unskipped example; each runs in a few seconds on tiny
models and needs no shared data. Not listed: modules whose examples are all `# doctest: +SKIP`
because they need external files (dataset readers in data.*, metrics.coco, the pretrained-teacher
wrappers, export.*) or a full-size model.
"""

import doctest
import importlib
import pkgutil

import pytest

DOCTEST_MODULES = [
    "kdpose_tf.codecs.heatmap_codec",
    "kdpose_tf.data.lsp",
    "kdpose_tf.data.pipeline",
    "kdpose_tf.data.transforms",
    "kdpose_tf.data.validation",
    "kdpose_tf.distillation.distiller",
    "kdpose_tf.distillation.dwpose",
    "kdpose_tf.distillation.feature",
    "kdpose_tf.runtimes.model_config",
    "kdpose_tf.runtimes.pretrained_models",
    "kdpose_tf.export.equalization",
    "kdpose_tf.export.targets",
    "kdpose_tf.export.bn_folding",
    "kdpose_tf.export.qat_layers",
    "kdpose_tf.export.qat",
    "kdpose_tf.models.imported.graph_backbone",
    "kdpose_tf.models.imported.openvino_import",
    "kdpose_tf.distillation.pretrained",
    "kdpose_tf.distillation.schedules",
    "kdpose_tf.distillation.teacher",
    "kdpose_tf.evaluation",
    "kdpose_tf.keypoints",
    "kdpose_tf.metrics.pck",
    "kdpose_tf.models.backbone",
    "kdpose_tf.models.graph",
    "kdpose_tf.models.heads.heatmap_head",
    "kdpose_tf.models.hourglass.hourglass_backbone",
    "kdpose_tf.models.hourglass.hourglass_presets",
    "kdpose_tf.models.hrnet.hrnet_backbone",
    "kdpose_tf.models.hrnet.hrnet_layers",
    "kdpose_tf.models.hrnet.hrnet_presets",
    "kdpose_tf.models.layers.bias",
    "kdpose_tf.models.layers.gated_psa",
    "kdpose_tf.models.layers.inverted_residual",
    "kdpose_tf.models.layers.norm",
    "kdpose_tf.models.layers.pooling",
    "kdpose_tf.models.layers.psa",
    "kdpose_tf.models.layers.residual",
    "kdpose_tf.models.layers.upsample",
    "kdpose_tf.models.lite_hrnet.dite_hrnet_layers",
    "kdpose_tf.models.lite_hrnet.lite_hrnet_backbone",
    "kdpose_tf.models.lite_hrnet.lite_hrnet_layers",
    "kdpose_tf.models.losses",
    "kdpose_tf.models.necks.csp_pan",
    "kdpose_tf.models.necks.residual_csp_pan",
    "kdpose_tf.models.pose_estimator",
    "kdpose_tf.models.presets",
    "kdpose_tf.models.proposal.proposal_student",
    "kdpose_tf.models.proposal.proposal_teacher",
    "kdpose_tf.models.summary",
    "kdpose_tf.training",
    "kdpose_tf.tracking",
    "kdpose_tf.utils.args",
    "kdpose_tf.utils.io",
    "kdpose_tf.utils.native_logs",
    "kdpose_tf.visualization",
]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), report=True,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example: drop it from DOCTEST_MODULES"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see the output above)"


def _runnable_examples(module):
    """Number of examples in `module`'s docstrings that doctest would run (not `+SKIP`)."""
    tests = doctest.DocTestFinder().find(module, module.__name__)
    return sum(1 for t in tests for e in t.examples if not e.options.get(doctest.SKIP, False))


def test_every_module_with_runnable_examples_is_listed():
    import kdpose_tf

    names = [m.name for m in pkgutil.walk_packages(kdpose_tf.__path__, "kdpose_tf.")]
    unlisted = [n for n in names if n not in DOCTEST_MODULES and _runnable_examples(importlib.import_module(n))]
    assert not unlisted, f"modules with unskipped docstring examples missing from DOCTEST_MODULES: {unlisted}"
