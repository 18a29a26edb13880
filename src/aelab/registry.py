"""Name -> class (or function) tables filled by decorators: kinds, networks, baselines, codecs."""

from __future__ import annotations


def registrar(table: dict, attribute: str | None = None):
    """A decorator factory: ``@register(name)`` puts the object into ``table`` under ``name``
    and, with ``attribute``, records the name on it (e.g. a kind's ``kind``)."""
    def register(name: str):
        def wrap(obj):
            if attribute is not None:
                setattr(obj, attribute, name)
            table[name] = obj
            return obj
        return wrap
    return register
