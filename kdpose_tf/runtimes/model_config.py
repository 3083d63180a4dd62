"""`TeacherConfig`: how to feed a pretrained heatmap model of another framework and read its output.

Written as ``teacher.json`` beside a model file; read by the heatmap teachers (`kdpose_tf.distillation`)
and by the importer that rebuilds the model in Keras (`kdpose_tf.models.imported`).

Every field is checked when the config is made, and an error names the field, what it received
and what it expects, so a wrong preprocessing choice fails before the first crop is run.

Example:
>>> cfg = TeacherConfig(path="model.xml", input_size=(256, 192))
>>> cfg.input_layout, cfg.mean
('nchw', (0.485, 0.456, 0.406))
>>> TeacherConfig(path="model.xml", input_size=(256, 192), input_layout="chw")
Traceback (most recent call last):
...
ValueError: TeacherConfig.input_layout: expected 'nchw' or 'nhwc', got 'chw'
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kdpose_tf.errors import PresetError
from kdpose_tf.keypoints import get_keypoint_set

FORMATS = (".xml", ".onnx", ".tflite")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Preprocessing and output layout of a top-down heatmap model.

    Args:
        path: the model file: OpenVINO IR ``.xml`` (with its ``.bin``), ``.onnx`` or ``.tflite``.
        input_size: (height, width) of the model input.
        keypoint_set: name of the joint order of its heatmap channels. Defaults to "coco17".
        color: "rgb" or "bgr" channel order the model expects. Defaults to "rgb".
        pixel_scale: factor on 0-255 pixels before mean/std. Defaults to 1/255.
        mean, std: per-channel normalisation after scaling. Default ImageNet's.
        input_layout: "nchw" or "nhwc". Defaults to "nchw".
        output_layout: "nchw" or "nhwc" of the heatmap output. Defaults to "nchw".
        output: index or name of the heatmap output. Defaults to 0.
        name: display name. Defaults to "" (the file name).
    """

    path: str
    input_size: tuple
    keypoint_set: str = "coco17"
    color: str = "rgb"
    pixel_scale: float = 1.0 / 255.0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    input_layout: str = "nchw"
    output_layout: str = "nchw"
    output: object = 0
    name: str = ""

    def __post_init__(self):
        path = str(self.path)
        if Path(path).suffix.lower() not in FORMATS:
            raise ValueError(f"TeacherConfig.path: expected a model file ending in {' / '.join(FORMATS)}, got {path!r}")
        size = self.input_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ValueError(f"TeacherConfig.input_size: expected (height, width) positive ints, got {size!r}")
        get_keypoint_set(self.keypoint_set)  # raises for an unknown set
        for field, allowed in (("color", ("rgb", "bgr")), ("input_layout", ("nchw", "nhwc")),
                               ("output_layout", ("nchw", "nhwc"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"TeacherConfig.{field}: expected {' or '.join(map(repr, allowed))}, "
                                 f"got {getattr(self, field)!r}")
        for field in ("mean", "std"):
            v = getattr(self, field)
            if not (isinstance(v, (tuple, list)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise ValueError(f"TeacherConfig.{field}: expected 3 numbers (R, G, B), got {v!r}")
        if any(x <= 0 for x in self.std) or not self.pixel_scale > 0:
            raise ValueError(f"TeacherConfig: std and pixel_scale must be > 0, got std={self.std}, "
                             f"pixel_scale={self.pixel_scale}")
        if not isinstance(self.output, (int, str)):
            raise ValueError(f"TeacherConfig.output: expected an output index or name, got {self.output!r}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "input_size", tuple(size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config, base_dir=None, source="teacher config"):
        """A config from a dict (e.g. ``teacher.json``); a relative `path` is taken from `base_dir`."""
        if not isinstance(config, dict):
            raise PresetError(f"{source}: expected a JSON object, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise PresetError(f"{source}: unknown field(s) {unknown}; expected some of {sorted(known)}")
        missing = [k for k in ("path", "input_size") if k not in config]
        if missing:
            raise PresetError(f"{source}: missing field(s) {missing}")
        config = dict(config)
        config["input_size"] = tuple(config["input_size"]) if isinstance(config["input_size"], list) \
            else config["input_size"]
        if base_dir is not None and not Path(config["path"]).is_absolute():
            config["path"] = str(Path(base_dir) / config["path"])
        try:
            return cls(**config)
        except ValueError as e:
            raise PresetError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path):
        """Read ``teacher.json`` (its model path relative to the file's folder)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise PresetError(f"{path}: teacher config not found") from None
        except json.JSONDecodeError as e:
            raise PresetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(data, base_dir=path.parent, source=str(path))

    def check_files(self):
        """The config itself, after checking its model file (and an IR's ``.bin``) exist."""
        p = Path(self.path)
        if not p.is_file():
            raise FileNotFoundError(f"teacher model not found: {p} (TeacherConfig.path, expected a "
                                    f"{' / '.join(FORMATS)} file)")
        if p.suffix.lower() == ".xml" and not p.with_suffix(".bin").is_file():
            raise FileNotFoundError(f"teacher model {p}: its weights {p.with_suffix('.bin').name} are missing "
                                    "(OpenVINO IR needs the .xml and the .bin side by side)")
        return self
