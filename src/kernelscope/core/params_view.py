"""A stage's view of params: the same pydantic models, except that reading a field the stage may not read raises.

``guarded(model, guard)`` copies a Params (or one of its sections) into a subclass whose attribute reads, dumps and
copies check ``guard`` first; core.stage_reads.params_for builds these for tasks. The values are the model's own:
a view is validated params, and everything that takes a Params takes it (isinstance holds).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, PrivateAttr

from kernelscope.core.errors import KernelscopeError


@dataclass(frozen=True)
class Guard:
    """Which fields of one model a stage may read."""

    stage: str
    prefix: str  # '' for Params, 'kernel.' inside the kernel section: how a field is named in errors
    allowed: frozenset[str]  # declared in core/stage_reads.py and sent by the flow
    declared: frozenset[str]  # declared in core/stage_reads.py

    def check(self, name: str) -> None:
        if name in self.allowed:
            return
        key = self.prefix + name
        if name in self.declared:
            raise KernelscopeError(
                f"stage {self.stage!r} reads {key}, but its flow did not send it; build the task's "
                f"sections with core.stage_reads.stage_sections(params, {self.stage!r}, dataset)."
            )
        raise KernelscopeError(
            f"stage {self.stage!r} reads {key} but does not declare it in core/stage_reads.py; "
            f"add {key!r} to the stage's params (or verifies) there."
        )


def _names(fields: Any, include: Any, exclude: Any) -> list[str]:
    """The top-level fields a dump with ``include`` / ``exclude`` (sets, or dicts of nested rules) writes out."""
    names = list(fields) if include is None else [name for name in include if name in fields]
    if isinstance(exclude, Mapping):  # nested rules exclude part of a field: only True drops it whole
        return [name for name in names if exclude.get(name) is not True]
    return [name for name in names if name not in (exclude or ())]


class _Guarded:
    """Mixin placed before the model in a view's bases: reads, dumps and copies check the view's guard."""

    def __getattribute__(self, name: str) -> Any:
        if name[:1] != "_" and name in type(self).__pydantic_fields__:
            guard = _guard_of(self)
            if guard is not None:
                guard.check(name)
        return super().__getattribute__(name)

    def _check_dump(self, include: Any = None, exclude: Any = None) -> None:
        guard = _guard_of(self)
        if guard is None:
            return
        for name in _names(type(self).__pydantic_fields__, include, exclude):
            guard.check(name)
            value = object.__getattribute__(self, "__dict__").get(name)
            if isinstance(value, _Guarded):  # a partly readable section: dumped through its parent, checked whole
                value._check_dump()

    def model_dump(self, *, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        self._check_dump(include, exclude)
        return super().model_dump(include=include, exclude=exclude, **kwargs)  # type: ignore[misc]

    def model_dump_json(self, *, include: Any = None, exclude: Any = None, **kwargs: Any) -> str:
        self._check_dump(include, exclude)
        return super().model_dump_json(include=include, exclude=exclude, **kwargs)  # type: ignore[misc]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        copy = super().model_copy(update=update, deep=deep)  # type: ignore[misc]
        guard = _guard_of(self)
        if guard is not None and update:  # a value the stage set itself is the stage's to read
            copy._guard = replace(guard, allowed=guard.allowed | frozenset(update))
        return copy


def _guard_of(model: Any) -> Guard | None:
    private = object.__getattribute__(model, "__pydantic_private__")
    return private.get("_guard") if private else None


@functools.cache
def _view_class(model: type[BaseModel]) -> type[BaseModel]:
    class View(_Guarded, model):  # type: ignore[valid-type, misc]
        _guard: Any = PrivateAttr(None)

    View.__name__ = View.__qualname__ = f"{model.__name__}View"
    View.__doc__ = f"{model.__name__} as one stage may read it (kernelscope.core.params_view)."
    return View


def guarded(model: BaseModel, guard: Guard, **fields: Any) -> Any:
    """A view of ``model`` (its values; ``fields`` replace some, e.g. by views of sections) that checks ``guard``."""
    values = {**object.__getattribute__(model, "__dict__"), **fields}
    view = _view_class(type(model)).model_construct(_fields_set=set(model.model_fields_set), **values)
    view._guard = guard
    return view
