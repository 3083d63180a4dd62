"""Shared fixtures. Real data comes from KDPOSE_SHARED (default ../shared)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from kdpose_tf.utils import shared  # noqa: E402


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (`kdpose_tf.utils.shared.shared_dir`); fails in CI (CI=true) when absent, skips locally."""
    try:
        return shared.shared_dir()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def data_dir(shared_dir) -> Path:
    return shared_dir / "data"


@pytest.fixture(autouse=True)
def _keras_session():
    """Each test starts from a clean Keras name scope so auto-generated names are stable.

    Without the full garbage collection `clear_session` runs by default: on a worker's heap of loaded
    TensorFlow graphs it costs up to a second of CPU per test, and Python's own collector still frees
    the cycles."""
    import keras

    keras.backend.clear_session(free_memory=False)
    yield
