"""Small shared types: the clock, sans-IO flows (docs/primitives/sansio.md), JSON aliases, and
the base of caller-built models that refuse bad input with a ``TeamsEhrError`` (docs/errors.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias, TypeVar

import httpx

from teams_ehr.errors import UsageError

_DEFINING = threading.Lock()

if TYPE_CHECKING:
    from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T")

Clock: TypeAlias = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime. Injected everywhere time matters."""

Flow: TypeAlias = Generator[httpx.Request, httpx.Response, T]
"""A sans-IO protocol flow: yields requests, receives responses, returns a result (httpx's
``Auth.auth_flow`` shape). Run it with :func:`teams_ehr.sansio.run_sync` or ``run_async``."""

JsonObject: TypeAlias = dict[str, Any]


def utc_now() -> datetime:
    """The default :data:`Clock`."""
    return datetime.now(UTC)


def require_aware(value: datetime, name: str) -> datetime:
    """``value`` if it carries a UTC offset, else ``UsageError(reason="naive_datetime")``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(f"{name} must be a timezone-aware datetime", reason="naive_datetime")
    return value


def invalid_input(
    model: str, exc: ValidationError, error: type[UsageError] = UsageError
) -> UsageError:
    """The ``error`` for a refused model: the fields' names, never their values."""
    errors = exc.errors(include_input=False, include_url=False)
    if any(e["type"] == "timezone_aware" for e in errors):
        return error(f"{model}: datetimes must be timezone-aware", reason="naive_datetime")
    fields = sorted({".".join(str(p) for p in e["loc"]) or "(model)" for e in errors})
    return error(f"invalid {model}: {', '.join(fields)}")


if TYPE_CHECKING:

    class CallerModel(BaseModel):
        """Base of the frozen models integrators build; defined by :func:`_define_caller_model`."""

        model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
        refusal: ClassVar[type[UsageError]]

else:

    def __getattr__(name: str) -> Any:
        """``CallerModel`` is defined on first use (PEP 562): importing this module, as every
        module of the package does for :data:`Clock`, does not load pydantic's model machinery."""
        if name != "CallerModel":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        with _DEFINING:  # one class, even when two threads import its subclasses at once
            model = globals().get("CallerModel")
            if model is None:
                model = globals()["CallerModel"] = _define_caller_model()
        return model


def _define_caller_model() -> type[Any]:
    from pydantic import (
        BaseModel,
        ConfigDict,
        ModelWrapValidatorHandler,
        ValidationError,
        model_validator,
    )

    class CallerModel(BaseModel):
        """Base of the frozen models integrators build (``MeetingRequest``,
        ``SmartClientConfig`` …).

        Invalid input raises :attr:`refusal` (:class:`~teams_ehr.errors.UsageError`, or
        ``ConfigurationError`` for configuration models; ``reason="naive_datetime"`` for a
        datetime without offset, else the class's default reason) naming the fields, never
        pydantic's ``ValidationError`` and never the values (docs/errors.md). A subclass's own
        ``model_validator`` runs outside this conversion, so it raises a ``TeamsEhrError``
        itself.
        """

        model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
        refusal: ClassVar[type[UsageError]] = UsageError

        @model_validator(mode="wrap")
        @classmethod
        def _refuse_as_usage_error(
            cls, data: Any, handler: ModelWrapValidatorHandler[Self]
        ) -> Self:
            try:
                return handler(data)
            except ValidationError as exc:
                raise invalid_input(cls.__name__, exc, cls.refusal) from None

    CallerModel.__qualname__ = "CallerModel"  # pickled and shown as teams_ehr._types.CallerModel
    return CallerModel
