"""User-facing errors.

An ``AtlasError`` is a mistake the user can fix (bad model name, unknown layer,
missing data...). The CLI prints its message on one line and exits with code 2;
anything else is a bug and keeps its traceback.
"""


class AtlasError(Exception):
    """A problem with the user's input, explained in one line."""


def choose(kind: str, value, valid) -> None:
    """Raise an AtlasError naming `value` and the valid choices unless it is one of them."""
    valid = list(valid)
    if value not in valid:
        shown = ", ".join(map(str, valid[:40])) + (", ..." if len(valid) > 40 else "")
        raise AtlasError(f"unknown {kind} {value!r}; valid {kind}s: {shown}")
