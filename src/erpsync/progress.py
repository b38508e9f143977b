"""How long work reports its progress to whoever shows it (the CLI's Rich bars)."""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(label, done, total)`` while long work goes on."""
