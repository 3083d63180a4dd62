"""Exceptions with messages that name the file, the field and what was expected."""


class KdposeError(Exception):
    """Base class of kdpose_tf's own errors."""


class DataError(KdposeError, ValueError):
    """A dataset file, image or annotation is missing or malformed.

    Args:
        message: what is wrong and what was expected.
        path: the file concerned.
        field: the annotation field concerned (e.g. "keypoints").
        annotation_id: the annotation / sample id, where there is one.
    """

    def __init__(self, message, path=None, field=None, annotation_id=None):
        self.message = message  # without the file / annotation / field prefix
        self.path = None if path is None else str(path)
        self.field = field
        self.annotation_id = annotation_id
        where = []
        if path is not None:
            where.append(f"file {self.path}")
        if annotation_id is not None:
            where.append(f"annotation {annotation_id}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class PresetError(KdposeError, ValueError):
    """A preset name or directory is unknown or malformed."""


class ShapeMismatchError(KdposeError, ValueError):
    """Teacher and student outputs (or features) cannot be compared as they are."""


class ModelFileError(KdposeError, ValueError):
    """A model file (.keras, .tflite, .xml / .bin, .onnx) is missing, truncated or not of its format."""


class RunDirError(KdposeError, ValueError):
    """A run directory cannot be resumed: its state is corrupt, or it holds another run."""
