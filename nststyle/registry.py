"""Registries of classes by the name a file or a config gives them (model kinds, loss terms)."""
from __future__ import annotations


def registering(table: dict, attribute: str):
    """A decorator factory: ``@decorator("name")`` enters the class in ``table`` under ``name`` and sets its
    ``attribute`` to it."""
    def decorator(name: str):
        def add(cls):
            table[name] = cls
            setattr(cls, attribute, name)
            return cls
        return add
    return decorator
