"""Methods by name: the trainer builds ``--method NAME`` from :data:`METHODS` alone."""

from __future__ import annotations

from mce.methods.base import MethodSpec

__all__ = ["METHODS", "register_method", "get_method"]

METHODS: dict[str, MethodSpec] = {}
"""Every registered method, by name, in registration order."""


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to :data:`METHODS` and return its spec (usable at module level).

    Raises:
        ValueError: a method of that name is already registered, or the name is ``compare``.

    Example:
        >>> SPEC = register_method(MethodSpec("redcore", "...", RedCoreConfig, build, needs))
    """
    if spec.name == "compare":
        raise ValueError("'compare' is reserved: --method compare trains mce and baseline")
    if spec.name in METHODS:
        raise ValueError(f"a method named {spec.name!r} is already registered")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``.

    Raises:
        ValueError: no such method; the message lists the known names.
    """
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ValueError(f"unknown method {name!r}; known methods: {known}") from None
