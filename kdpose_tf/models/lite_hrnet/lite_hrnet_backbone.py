"""`LiteHRNetBackbone`: Lite-HRNet (Yu et al., CVPR 2021) and Dite-HRNet (Li et al., IJCAI 2022).

HRNet topology with cheap blocks: a shuffle-block stem to 1/4 resolution, then stages of
modules over 2, 3, 4 parallel branches (1/4, 1/8, 1/16, 1/32), each module = ``blocks_per_module``
blocks followed by multi-resolution fusion. The block is conditional channel weighting (Lite) or
the dynamic multi-scale context block (Dite). The published models end with an "iterative head"
(top-down depthwise-separable fusion), on by default.
"""

from __future__ import annotations

import keras

from kdpose_tf.models.backbone import Backbone, normalize_images
from kdpose_tf.utils.args import check_int_tuple
from kdpose_tf.models.lite_hrnet import dite_hrnet_layers as dite
from kdpose_tf.models.lite_hrnet import lite_hrnet_layers as lite

_VARIANTS = ("lite", "dite")


@keras.saving.register_keras_serializable(package="kdpose_tf")
class LiteHRNetBackbone(Backbone):
    """Lite-HRNet / Dite-HRNet backbone returning {"P2": 1/4, "P3": 1/8, "P4": 1/16, "P5": 1/32}.

    Args:
        variant: "lite" (conditional channel weighting, default) or "dite" (dynamic split
            convolution + adaptive context modelling).
        stem_width: stem output channels (default 32).
        widths: branch widths (default (40, 80, 160, 320)); ``len(widths) == len(stage_modules) + 1``.
        stage_modules: modules per stage (default (2, 4, 2) = the "18" models; (3, 8, 3) = "30").
        blocks_per_module: blocks per module (default 2).
        psa: insert `PolarizedSelfAttention` after the 3x3 depthwise conv (Lite) / dynamic split
            conv (Dite) of every block (default False).
        iterative_head: end with the published iterative head (default True). Output widths are
            then (w0, w0, w1, w2) for P2..P5; without it (w0, w1, w2, w3).
        reduction: channel reduction of cross-resolution weighting / dense context (default 8).
        input_shape: (H, W, 3), H and W divisible by 2 ** (len(widths) + 1) (default (256, 192, 3)).
        **kwargs: `keras.Model` arguments (name, trainable, dtype).

    Example:
        >>> bb = LiteHRNetBackbone(variant="dite", stage_modules=(1, 1, 1), widths=(16, 32, 64, 128),
        ...                        input_shape=(64, 64, 3))
        >>> feats = bb(keras.ops.zeros((1, 64, 64, 3)))
        >>> {level: tuple(f.shape) for level, f in feats.items()}   # iterative head: widths (w0, w0, w1, w2)
        {'P2': (1, 16, 16, 16), 'P3': (1, 8, 8, 16), 'P4': (1, 4, 4, 32), 'P5': (1, 2, 2, 64)}
    """

    def __init__(
        self,
        variant="lite",
        stem_width=32,
        widths=(40, 80, 160, 320),
        stage_modules=(2, 4, 2),
        blocks_per_module=2,
        psa=False,
        iterative_head=True,
        reduction=8,
        input_shape=(256, 192, 3),
        **kwargs,
    ):
        if variant not in _VARIANTS:
            raise ValueError(f"LiteHRNetBackbone: variant must be one of {_VARIANTS}, received {variant!r}")
        if not isinstance(stem_width, int) or stem_width < 2 or stem_width % 2:
            raise ValueError(f"LiteHRNetBackbone: stem_width must be an even int >= 2, received {stem_width!r}")
        widths = check_int_tuple("widths", widths, min_len=2, owner="LiteHRNetBackbone")
        stage_modules = check_int_tuple("stage_modules", stage_modules, owner="LiteHRNetBackbone")
        if len(widths) != len(stage_modules) + 1:
            raise ValueError(
                f"LiteHRNetBackbone: expected len(widths) == len(stage_modules) + 1, received "
                f"widths={widths} and stage_modules={stage_modules}"
            )
        if len(widths) > 4:
            raise ValueError(f"LiteHRNetBackbone: at most 4 branches (P2..P5), received widths={widths}")
        if any(w % 2 for w in widths):
            raise ValueError(f"LiteHRNetBackbone: widths must be even (blocks split channels), received {widths}")
        if not isinstance(blocks_per_module, int) or blocks_per_module < 1:
            raise ValueError(f"LiteHRNetBackbone: blocks_per_module must be an int >= 1, received {blocks_per_module!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"LiteHRNetBackbone: reduction must be an int >= 1, received {reduction!r}")
        input_shape = tuple(input_shape)
        div = 2 ** (len(widths) + 1)
        if len(input_shape) != 3 or input_shape[2] != 3 or any(
            s is None or int(s) % div for s in input_shape[:2]
        ):
            raise ValueError(
                f"LiteHRNetBackbone: input_shape must be (H, W, 3) with H, W divisible by {div}, "
                f"received {input_shape}"
            )
        input_shape = tuple(int(s) for s in input_shape)

        images = keras.Input(input_shape, name="images")
        x = normalize_images(images)
        x = (dite.dite_stem if variant == "dite" else lite.lite_stem)(x, stem_width, name="stem")
        xs = [x]
        for s, n_modules in enumerate(stage_modules):
            stage = f"stage{s + 2}"
            xs = lite.transition(xs, widths[: s + 2], name=f"{stage}_transition")
            for m in range(n_modules):
                for b in range(blocks_per_module):
                    prefix = f"{stage}_module{m}_block{b}"
                    if variant == "dite":
                        xs = dite.dynamic_context_block(xs, reduction, psa, prefix)
                    else:
                        xs = lite.conditional_channel_weighting(xs, reduction, psa, prefix)
                xs = lite.fuse(xs, name=f"{stage}_module{m}_fuse")
        if iterative_head:
            xs = lite.iterative_head(xs, name="head")
        outputs = {f"P{i + 2}": t for i, t in enumerate(xs)}
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        self.variant = variant
        self.stem_width = stem_width
        self.widths = widths
        self.stage_modules = stage_modules
        self.blocks_per_module = blocks_per_module
        self.psa = bool(psa)
        self.iterative_head = bool(iterative_head)
        self.reduction = reduction
        self.image_shape = input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "variant": self.variant,
                "stem_width": self.stem_width,
                "widths": list(self.widths),
                "stage_modules": list(self.stage_modules),
                "blocks_per_module": self.blocks_per_module,
                "psa": self.psa,
                "iterative_head": self.iterative_head,
                "reduction": self.reduction,
                "input_shape": list(self.image_shape),
            }
        )
        return config
