"""`PoseEstimator`: the top-down heatmap pose Task (backbone [+ neck] + head), keras-hub style.

Xiao et al. (SimpleBaseline, ECCV 2018), Sun et al. (HRNet, CVPR 2019), Newell et al. (stacked
hourglass, ECCV 2016): a person crop goes in, K heatmaps at 1/4 resolution come out.
"""

from __future__ import annotations

import re

import keras

from kdpose_tf.codecs.heatmap_codec import HeatmapCodec
from kdpose_tf.errors import ShapeMismatchError
from kdpose_tf.evaluation import keras_predict_fn, predict_boxes
from kdpose_tf.keypoints import get_keypoint_set
from kdpose_tf.models import preset_utils
from kdpose_tf.models.heads.heatmap_head import HeatmapHead
from kdpose_tf.models.losses import joints_mse

_STACK_KEY = re.compile(r"^heatmaps_stack(\d+)$")


def _spatial(t):
    return tuple(t.shape[1:3])


def _highest_resolution(outputs):
    """The output with the largest h*w among a dict / list / single tensor."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if not isinstance(outputs, (list, tuple)):
        return outputs
    return max(outputs, key=lambda t: (t.shape[1] or 0) * (t.shape[2] or 0))


@keras.saving.register_keras_serializable(package="kdpose_tf")
class PoseEstimator(keras.Model):
    """Top-down heatmap pose estimator (a functional `keras.Model` built in the constructor).

    Graph: images (B, H, W, 3) float32 RGB in [0, 255] -> `backbone` (dict of features)
    -> optional `neck` (its highest-resolution output is used) or `backbone[feature_level]`
    -> `head` -> final heatmaps (B, h, w, K) float32.
    Outputs are always a list, one tensor per supervised stack with the final one last: the
    backbone's "heatmaps_stack{i}" outputs (stacked hourglass) in stack order, then the head's.

    Training: `compile(optimizer)` without a loss uses the target-weighted joints MSE
    (`kdpose_tf.models.losses.joints_mse`) on *every* output against y["heatmaps"] with
    y["target_weight"], summed over the outputs (intermediate supervision, Newell et al.).
    A loss given to `compile` replaces it.

    Args:
        backbone: a `Backbone` (dict outputs).
        num_keypoints: K; default None = the keypoint set's size.
        keypoint_set: "coco17" (default), "mpii16", "lsp14", a `KeypointSet`, or None for a custom K.
        head: a layer mapping the feature to heatmaps; default `HeatmapHead(K)` (one 1x1 conv).
        neck: optional layer taking the backbone's dict of features (default None).
        feature_level: backbone output the head reads when there is no neck (default "P2").
        input_size: (H, W); default None = the backbone's input size (must agree when both known).
        codec: a `HeatmapCodec` used by `predict_keypoints`; default None = built on demand.
        **kwargs: `name` (default "pose_estimator"), `trainable`.

    Example:
    >>> from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
    >>> bb = HourglassBackbone(num_stacks=2, filters=16, num_keypoints=16, input_shape=(64, 64, 3))
    >>> model = PoseEstimator(bb, keypoint_set="mpii16")
    >>> [tuple(o.shape) for o in model.outputs]
    [(None, 16, 16, 16), (None, 16, 16, 16)]
    """

    def __init__(
        self,
        backbone,
        num_keypoints=None,
        keypoint_set="coco17",
        head=None,
        neck=None,
        feature_level="P2",
        input_size=None,
        codec=None,
        **kwargs,
    ):
        if not isinstance(backbone, keras.Model) or not isinstance(backbone.output, dict):
            raise ValueError(
                f"PoseEstimator: `backbone` must be a keras Model with dict outputs (a Backbone), received "
                f"{type(backbone).__name__}"
            )
        kset = None if keypoint_set is None else get_keypoint_set(keypoint_set)
        if num_keypoints is None:
            if kset is None:
                raise ValueError("PoseEstimator: give `num_keypoints` when `keypoint_set` is None")
            num_keypoints = kset.num_keypoints
        if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ValueError(f"PoseEstimator: `num_keypoints` must be a positive int, received {num_keypoints!r}")
        if kset is not None and kset.num_keypoints != num_keypoints:
            raise ValueError(
                f"PoseEstimator: num_keypoints={num_keypoints} does not match keypoint set {kset.name!r} "
                f"({kset.num_keypoints} joints); pass keypoint_set=None for a custom layout"
            )
        in_hw = tuple(backbone.input.shape[1:3])
        if input_size is not None:
            input_size = tuple(int(v) for v in input_size)
            if len(input_size) != 2:
                raise ValueError(f"PoseEstimator: `input_size` must be (H, W), received {input_size!r}")
            if None not in in_hw and in_hw != input_size:
                raise ValueError(
                    f"PoseEstimator: input_size={input_size} differs from the backbone's input size {in_hw}"
                )
        elif None not in in_hw:
            input_size = tuple(int(v) for v in in_hw)
        features = backbone.output
        if neck is None and feature_level not in features:
            raise ValueError(
                f"PoseEstimator: feature_level={feature_level!r} is not a backbone output; "
                f"available: {sorted(features)}"
            )
        if head is None:
            head = HeatmapHead(num_keypoints, name="heatmap_head")

        inputs = backbone.input
        feats = backbone(inputs)
        x = _highest_resolution(neck(feats)) if neck is not None else feats[feature_level]
        final = head(x)
        stack_keys = sorted((k for k in feats if _STACK_KEY.match(k)), key=lambda k: int(_STACK_KEY.match(k).group(1)))
        outputs = [feats[k] for k in stack_keys] + [final]
        for k, t in zip(stack_keys, outputs):
            if tuple(t.shape[1:]) != tuple(final.shape[1:]):
                raise ShapeMismatchError(
                    f"PoseEstimator: backbone output {k!r} has shape {tuple(t.shape[1:])} but the head's "
                    f"heatmaps have {tuple(final.shape[1:])}; intermediate and final heatmaps must match"
                )
        if int(final.shape[-1]) != num_keypoints:
            raise ShapeMismatchError(
                f"PoseEstimator: the head outputs {final.shape[-1]} channels, expected num_keypoints={num_keypoints}"
            )
        if codec is None and input_size is not None:
            codec = HeatmapCodec(input_size=input_size, heatmap_size=tuple(int(v) for v in final.shape[1:3]))
        kwargs.setdefault("name", "pose_estimator")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_keypoints = num_keypoints
        self.keypoint_set = kset
        self.feature_level = feature_level
        self.input_size = input_size
        self.codec = codec
        self._inference = None

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": ser(self.backbone),
            "num_keypoints": self.num_keypoints,
            "keypoint_set": None if self.keypoint_set is None else self.keypoint_set.name,
            "head": ser(self.head),
            "neck": None if self.neck is None else ser(self.neck),
            "feature_level": self.feature_level,
            "input_size": None if self.input_size is None else list(self.input_size),
            "codec": None if self.codec is None else _serialize_codec(self.codec),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        de = keras.saving.deserialize_keras_object
        for key in ("backbone", "head", "neck"):
            if isinstance(config.get(key), dict):
                config[key] = de(config[key])
        if isinstance(config.get("codec"), dict):
            config["codec"] = _deserialize_codec(config["codec"])
        return cls(**config)

    # ------------------------------------------------------------------ presets
    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """Build from a catalogue name, a preset directory, a hf:// / kaggle:// handle, or the name of a
        pretrained model from another framework (`pp_tinypose_128x96`, `pp_tinypose_256x192`: imported
        with its COCO weights through `kdpose_tf.models.imported`; keypoint_set mapped by name, input_size
        a multiple of the graph's coarsest stride).

        See `kdpose_tf.models.preset_utils`; `PresetError` when the preset does not hold a `cls`.
        Catalogue entries take PoseEstimator overrides (num_keypoints, keypoint_set, input_size, ...)
        and backbone overrides (see `kdpose_tf.models.presets.build`).

        Example:
        >>> model = PoseEstimator.from_preset("lshm_2_mpii_256x256", load_weights=False, input_size=(64, 64))
        >>> model.input_size, model.keypoint_set.name
        ((64, 64), 'mpii16')
        """
        loader = preset_utils.preset_loader(preset)
        if loader is not None:  # a pretrained model from another framework (pp_tinypose_128x96, ...)
            return loader(preset, **overrides)
        source = preset_utils.locate_preset(preset, load_weights)
        if isinstance(source, str):  # catalogue entry, built without weights
            return preset_utils.build_catalogue(source, cls, **overrides)
        if not issubclass(source.cls, cls):
            raise source.wrong_class(cls)
        return source.load(load_weights, **overrides)

    save_to_preset = preset_utils.save_to_preset

    # ------------------------------------------------------------------ training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Joints MSE summed over every output (see the class docstring); plus `self.losses`."""
        if getattr(self, "_compile_loss", None) is not None:
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if isinstance(y, dict):
            if "heatmaps" not in y:
                raise ValueError(f"PoseEstimator.compute_loss: y must hold 'heatmaps', got keys {sorted(y)}")
            heatmaps, weight = y["heatmaps"], y.get("target_weight")
        else:
            heatmaps, weight = y, None
        preds = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
        total = None
        for pred in preds:
            term = joints_mse(heatmaps, pred, weight, sample_weight)
            total = term if total is None else total + term
        for extra in self.losses:
            total = total + keras.ops.cast(extra, "float32")
        return total

    # ------------------------------------------------------------------ inference
    def inference_model(self):
        """A single-output functional model (final heatmaps) sharing this model's layers, for export.

        Its input is the image tensor itself (not a list of one), so calling it on an array or
        tensor matches its input structure.
        """
        return keras.Model(self.inputs[0], self.outputs[-1], name=f"{self.name}_inference")

    def _get_codec(self):
        if self.codec is None:
            self.codec = HeatmapCodec(input_size=self.input_size, heatmap_size=tuple(self.outputs[-1].shape[1:3]))
        return self.codec

    def predict_keypoints(self, images, boxes, flip_test=False, batch_size=32):
        """Keypoints in image coordinates for person boxes.

        Each box (x, y, w, h) is widened to the model's aspect ratio with padding 1.25, cropped by an
        affine warp, the heatmaps are decoded by the codec (flip test optional) and mapped back
        (`kdpose_tf.evaluation.predict_boxes` with this model).

        Args:
            images: list of uint8 RGB arrays (H, W, 3) or image paths, one per box.
            boxes: (N, 4) person boxes x, y, w, h in image pixels.
            flip_test: average with the mirrored crop's heatmaps (needs a keypoint set) (default False).
            batch_size: crops per forward pass (default 32).

        Returns:
            keypoints (N, K, 2) float32 (x, y) image pixels, scores (N, K) float32 (heatmap maxima).
        """
        if self.input_size is None:
            raise ValueError("predict_keypoints needs a fixed input size; build the model with `input_size`")
        if flip_test and self.keypoint_set is None:
            raise ValueError("predict_keypoints(flip_test=True) needs a keypoint set for the left/right swap")
        if self._inference is None:
            self._inference = self.inference_model()
        return predict_boxes(
            keras_predict_fn(self._inference), images, boxes, self.input_size, self._get_codec(), self.keypoint_set,
            flip_test=flip_test, batch_size=batch_size, num_keypoints=self.num_keypoints,
        )


def _serialize_codec(codec):
    return {
        "module": type(codec).__module__,
        "class_name": type(codec).__name__,
        "config": codec.get_config(),
    }


def _deserialize_codec(spec, where="codec"):
    module = preset_utils.import_allowed_module(spec["module"], where, spec["class_name"])
    return getattr(module, spec["class_name"]).from_config(spec["config"])
