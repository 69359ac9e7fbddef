"""Deprecation warnings, the way the deprecation policy promises them (docs/stability.md).

A public name is never removed without warning: it keeps working for at least one minor release,
and every use of it emits a :class:`DeprecationWarning` that names it, the release that
deprecated it, the release that removes it and what to use instead, attributed to the caller's
line (``stacklevel``), so ``python -W error::DeprecationWarning`` and pytest's
``filterwarnings = ["error"]`` point at the code to change.

Three shapes cover what a release deprecates: :func:`deprecated` wraps a function or a class,
:func:`moved_names` serves renamed or moved module attributes through a module ``__getattr__``
(PEP 562), and :meth:`Deprecation.warn` is called directly where a parameter or a value is
deprecated. ``teams_ehr.testing.deprecation.assert_deprecated`` checks each one in a test.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from teams_ehr.errors import UsageError

_T = TypeVar("_T", bound=Callable[..., Any])

# A release as this project numbers them (semantic versioning): MAJOR.MINOR or MAJOR.MINOR.PATCH.
_RELEASE = re.compile(r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)(?:\.(?P<patch>0|[1-9]\d*))?$")


def release_tuple(release: str) -> tuple[int, int, int]:
    """``"0.3"`` or ``"0.3.0"`` → ``(0, 3, 0)``; anything else is a :class:`UsageError`
    (reason ``usage``: a mistake in our own source, found when the module is imported)."""
    match = _RELEASE.match(release)
    if match is None:
        raise UsageError(
            f"{release!r} is not a release number: use MAJOR.MINOR or MAJOR.MINOR.PATCH "
            "(docs/stability.md)"
        )
    return int(match["major"]), int(match["minor"]), int(match["patch"] or 0)


@dataclass(frozen=True)
class Deprecation:
    """One deprecated name: ``name`` is its public, dotted path (``teams_ehr.x.old``).

    ``removed_in`` must be a minor or major release after the minor release of ``since``: the
    policy keeps a deprecated name working, with warnings, for at least one minor release.
    """

    name: str
    since: str
    removed_in: str
    instead: str | None = None

    def __post_init__(self) -> None:
        since = release_tuple(self.since)
        removed = release_tuple(self.removed_in)
        if removed[2] != 0 or removed[:2] <= since[:2]:
            raise UsageError(
                f"{self.name} deprecated in {self.since} cannot be removed in {self.removed_in}: "
                "removal comes in a later minor or major release (X.Y.0), never a patch "
                "(docs/stability.md)"
            )

    @property
    def message(self) -> str:
        """The warning's text: what, since when, until when, and what to use instead."""
        text = (
            f"{self.name} is deprecated since teams-ehr {self.since} "
            f"and will be removed in {self.removed_in}"
        )
        return f"{text}; use {self.instead} instead" if self.instead else text

    def warn(self, stacklevel: int = 1) -> None:
        """Emit the warning, attributed ``stacklevel`` frames above the caller of ``warn``."""
        warnings.warn(self.message, DeprecationWarning, stacklevel=stacklevel + 2)


def deprecated(
    name: str, *, since: str, removed_in: str, instead: str | None = None
) -> Callable[[_T], _T]:
    """Decorate a function, coroutine function or class: each call (or instantiation) warns,
    then runs unchanged."""
    notice = Deprecation(name, since, removed_in, instead)

    def decorate(target: _T) -> _T:
        if inspect.isclass(target):
            original_init = target.__init__

            @functools.wraps(original_init)
            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                notice.warn()
                original_init(self, *args, **kwargs)

            target.__init__ = init  # type: ignore[method-assign]
            return target
        if inspect.iscoroutinefunction(target):

            @functools.wraps(target)
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                notice.warn()
                return await target(*args, **kwargs)

            return call_async  # type: ignore[return-value]

        @functools.wraps(target)
        def call(*args: Any, **kwargs: Any) -> Any:
            notice.warn()
            return target(*args, **kwargs)

        return call  # type: ignore[return-value]

    return decorate


def moved_names(module: str, moves: Mapping[str, tuple[str, Deprecation]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for names that moved or were renamed.

    ``moves`` maps each old attribute of ``module`` to ``("new.module:NewName", deprecation)``;
    reading the old attribute warns and returns the object at its new home. Other names raise
    the usual :class:`AttributeError`.
    """

    def module_getattr(name: str) -> Any:
        entry = moves.get(name)
        if entry is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, notice = entry
        notice.warn()
        home, _, attribute = target.partition(":")
        return getattr(importlib.import_module(home), attribute)

    return module_getattr
