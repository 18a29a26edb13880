"""Methods that need an optional package: one place that says whether it is installed."""

from __future__ import annotations

import importlib.util
from typing import ClassVar


class NeedsOptional:
    """A mixin for baselines and codecs: ``requires`` = (module, what to install) when the
    method needs an optional package, else None; ``available()`` says whether it is there."""

    requires: ClassVar[tuple[str, str] | None] = None

    @classmethod
    def available(cls) -> bool:
        return cls.requires is None or importlib.util.find_spec(cls.requires[0]) is not None
