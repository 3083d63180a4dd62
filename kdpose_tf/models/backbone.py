"""`Backbone`: base class of every feature extractor (keras-hub's Backbone shape).

A backbone is a functional `keras.Model` built in its constructor from plain arguments.
Calling it returns a dict of named multi-scale features, so necks and heads plug into any
backbone the same way:

    {"P2": stride-4 feature, "P3": stride-8, "P4": stride-16, "P5": stride-32}

Only the levels a backbone has are present (a stacked hourglass has "P2" only, plus its
per-stack outputs, see `HourglassBackbone`). Images enter as float32 RGB in [0, 255]; every
backbone normalises inside the graph (so an exported TFLite model takes raw pixels).

Subclasses store their constructor arguments and return them from `get_config`;
`from_config` rebuilds the graph from them.
"""

from __future__ import annotations

import keras

from kdpose_tf.errors import PresetError
from kdpose_tf.models import preset_utils


@keras.saving.register_keras_serializable(package="kdpose_tf")
class Backbone(keras.Model):
    """Base class of kdpose_tf backbones. See the module docstring for the contract."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    @property
    def pyramid_outputs(self) -> dict:
        """Named multi-scale outputs ("P2".."P5", plus family-specific extras)."""
        outputs = self.output
        if not isinstance(outputs, dict):
            raise TypeError(f"{type(self).__name__} must output a dict of named features, got {type(outputs)}")
        return outputs

    @property
    def pyramid_channels(self) -> dict:
        return {k: int(v.shape[-1]) for k, v in self.pyramid_outputs.items()}

    def get_config(self):
        # Subclasses extend this with their constructor arguments.
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """Build this backbone from a catalogue name, a preset directory or a hf:// / kaggle:// handle.

        A `PoseEstimator` preset gives its backbone (`overrides` are then ignored). See
        `kdpose_tf.models.preset_utils`. Raises `PresetError` when the preset holds another class.

        Example:
        >>> from kdpose_tf.models.hourglass.hourglass_backbone import HourglassBackbone
        >>> bb = HourglassBackbone.from_preset("lshm_2_mpii_256x256", load_weights=False, input_shape=(64, 64, 3))
        >>> bb.num_stacks, bb.filters
        (2, 128)
        """
        source = preset_utils.locate_preset(preset, load_weights)
        if isinstance(source, str):  # catalogue entry, built without weights
            found = preset_utils.catalogue_backbone_class(source)
            if not issubclass(found, cls):
                raise PresetError(f"preset {source!r} has a {found.__name__} backbone, not a {cls.__name__}")
            return preset_utils.build_catalogue(source, cls, **overrides)
        if issubclass(source.cls, cls):
            return source.load(load_weights, **overrides)
        if issubclass(source.cls, Backbone) or not source.holds_backbone:
            raise source.wrong_class(cls)
        backbone = source.load(load_weights).backbone  # a task preset: its backbone
        if not isinstance(backbone, cls):
            raise PresetError(
                f"{source.config_path}: the preset's backbone is a {type(backbone).__name__}, not a {cls.__name__}"
            )
        return backbone

    save_to_preset = preset_utils.save_to_preset


def normalize_images(x, name="normalize"):
    """Map float RGB in [0, 255] to [-1, 1] inside the graph (one Rescaling layer)."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)(x)
