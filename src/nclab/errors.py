"""User-facing errors.

Anything a user can cause (a bad file, a misspelt key, an unknown name) raises
:class:`NclabError` with a one-line message naming the file / field / value and what was
expected. The CLI prints that line and exits with code 2; programming errors keep their
tracebacks.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class NclabError(ValueError):
    """An error caused by the user's input (a ``ValueError``): printed as one line, CLI exit code 2.

    A message with line breaks (a parser's or a library's, quoted) is joined into one line."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if "\n" in text or "\r" in text:
            text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        super().__init__(text)


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> NclabError:
    """Error for an unknown registry name, listing the valid ones (closest first)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return NclabError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}")


def check_finite(a, what: str = "features", offset: int = 0) -> None:
    """Refuse NaN / inf in ``a`` (a NumPy array or a torch tensor, on any device), naming how many
    there are and where the first is (row + ``offset``). One sum decides (NaN and inf propagate
    into it); the element-wise scan runs only when the sum is not finite, which finite values
    whose sum overflows also trigger (and then pass)."""
    if type(a).__module__.split(".")[0] == "torch":
        import torch as xp
        total = a.sum(dtype=xp.float32 if a.dtype in (xp.float16, xp.bfloat16) else None)
    else:
        import numpy as xp
        a = xp.asarray(a)
        with xp.errstate(over="ignore", invalid="ignore"):
            total = a.sum(dtype=xp.float32 if a.dtype == xp.float16 else None)
    if bool(xp.isfinite(total)):
        return
    bad = ~xp.isfinite(a)
    n = int(bad.sum())
    if n:
        flat = int(bad.reshape(-1).nonzero()[0][0])
        at = f"row {flat // a.shape[1] + offset}, column {flat % a.shape[1]}" if a.ndim == 2 else f"index {flat + offset}"
        raise NclabError(f"{what}: {n} non-finite value{'s' if n > 1 else ''} (NaN or inf), the first at {at}; "
                         f"expected finite numbers")


def check_memory(nbytes: int, what: str) -> None:
    """Refuse ``what`` when it needs more than this machine's physical memory (a mistyped size
    should fail at once, not swap for an hour or be killed by the kernel)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):          # not knowable here: no check
        return
    if nbytes > total:
        raise NclabError(f"{what}: needs {nbytes / 2 ** 30:,.1f} GiB, more than this machine's "
                         f"{total / 2 ** 30:,.1f} GiB of memory")
