"""Where the real data and reference models live: `KDPOSE_SHARED` (default `../shared`)."""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_dir(required: bool = True) -> Path | None:
    """Return the shared folder (env `KDPOSE_SHARED`, else `<project>/../shared`).

    Raises FileNotFoundError naming both places looked at when `required` and it is absent.
    """
    env = os.environ.get("KDPOSE_SHARED")
    path = Path(env) if env else _PROJECT_ROOT.parent / "shared"
    if path.is_dir():
        return path
    if required:
        raise FileNotFoundError(
            f"shared data folder not found at {path} (set KDPOSE_SHARED to the folder holding data/ and models/)"
        )
    return None
