"""Imported first by the scripts tests run in a subprocess: TensorFlow cannot be imported there, as on a
machine without it (the GPU machines: JAX, no TensorFlow). A meta-path finder refuses it."""

import importlib.abc
import sys


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError("No module named 'tensorflow' (refused by the test)")


sys.meta_path.insert(0, NoTensorFlow())
