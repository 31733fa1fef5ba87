"""User-facing errors.

Anything a user can cause (a bad file, a misspelt key, an unknown name) raises
:class:`NclabError` with a one-line message naming the file / field / value and what was
expected. The CLI prints that line and exits with code 2; programming errors keep their
tracebacks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NclabError(ValueError):
    """An error caused by the user's input (a ``ValueError``): printed as one line, CLI exit code 2."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> NclabError:
    """Error for an unknown registry name, listing the valid ones (closest first)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return NclabError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")
