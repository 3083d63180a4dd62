"""Constructor-argument checks shared by models/ and data/ (and available to distillation/).

Each check raises `ValueError` naming the owner (class or function), the argument, what was
expected and what was received, and returns the value in its plain Python type.

Example:
>>> check_int("filters", 8, owner="HeatmapHead")
8
>>> check_int("filters", 0, owner="HeatmapHead")
Traceback (most recent call last):
ValueError: HeatmapHead: `filters` must be an int >= 1, received 0
>>> check_int_tuple("widths", [40, 80], min_len=2, owner="LiteHRNetBackbone")
(40, 80)
>>> check_bool("psa", 1, owner="build_proposal_student")
Traceback (most recent call last):
ValueError: build_proposal_student: `psa` must be a bool, received 1
"""

from __future__ import annotations

import numbers


def _prefix(owner):
    return f"{owner}: " if owner else ""


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(arg, value, minimum=1, owner=None) -> int:
    """`value` as an int >= `minimum` (default 1); bools and non-integers are refused."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{_prefix(owner)}`{arg}` must be an int >= {minimum}, received {value!r}")
    return int(value)


def check_int_tuple(arg, value, length=None, min_len=1, minimum=1, owner=None) -> tuple:
    """`value` (a list or tuple) as a tuple of ints >= `minimum`, of exactly `length` entries
    (when given) or at least `min_len` (default 1)."""
    size = f"{length}" if length is not None else f"at least {min_len}"
    if (
        not isinstance(value, (list, tuple))
        or (len(value) != length if length is not None else len(value) < min_len)
        or not all(_is_int(v) and v >= minimum for v in value)
    ):
        raise ValueError(f"{_prefix(owner)}`{arg}` must be a tuple of {size} ints >= {minimum}, received {value!r}")
    return tuple(int(v) for v in value)


def check_bool(arg, value, owner=None) -> bool:
    """`value` itself when it is a bool (0/1 and other truthy values are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{_prefix(owner)}`{arg}` must be a bool, received {value!r}")
    return value


def check_positive(arg, value, owner=None) -> float:
    """`value` as a float, finite and > 0 (a scale, a step multiplier); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise ValueError(f"{_prefix(owner)}`{arg}` must be a finite number > 0, received {value!r}")
    return float(value)


def check_number(arg, value, low=None, high=None, owner=None) -> float:
    """`value` as a float in [`low`, `high`] (either bound optional); bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{_prefix(owner)}`{arg}` must be a real number, received {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{_prefix(owner)}`{arg}` must be in [{low}, {high}], received {value!r}")
    return float(value)
