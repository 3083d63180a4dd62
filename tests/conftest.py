"""Shared fixtures. Real data comes from KDPOSE_SHARED (default ../shared)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


def _shared_path() -> Path:
    env = os.environ.get("KDPOSE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder; fails in CI (CI=true) when absent, skips locally."""
    path = _shared_path()
    if not path.is_dir():
        msg = f"shared data not found at {path}; set KDPOSE_SHARED"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def data_dir(shared_dir) -> Path:
    return shared_dir / "data"


@pytest.fixture(autouse=True)
def _keras_session():
    """Each test starts from a clean Keras name scope so auto-generated names are stable."""
    import keras

    keras.backend.clear_session()
    yield
