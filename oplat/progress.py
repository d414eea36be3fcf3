"""The one progress bar style: tqdm on stderr with rate and ETA (results stay on stdout)."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
