"""The compiled row walker (`_rows.c`), with an error that says how to build it."""

from __future__ import annotations

try:
    import pipeline.encoders._rows as rows
except ImportError as exc:  # pragma: no cover - only on an install that skipped the build
    raise ImportError(
        "pipeline.encoders._rows is not built: install the project with "
        "`pip install -e .` (or `make`), which compiles pipeline/encoders/_rows.c"
    ) from exc

__all__ = ["rows"]
