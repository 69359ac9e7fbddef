"""The deprecation policy's helpers (docs/stability.md): deprecated names keep working and warn at
the caller's line, a removal window is at least one minor release, and ``assert_deprecated``
fails for every way a deprecation can be wrong."""

from __future__ import annotations

import sys
import types

import anyio
import pytest

from teams_ehr._deprecation import Deprecation, deprecated, moved_names, release_tuple
from teams_ehr.errors import UsageError
from teams_ehr.testing import assert_deprecated


@deprecated("tests.old_add", since="0.2", removed_in="0.3", instead="tests.add")
def old_add(a: int, b: int) -> int:
    return a + b


@deprecated("tests.old_fetch", since="0.2", removed_in="0.3")
async def old_fetch(value: str) -> str:
    await anyio.sleep(0)
    return value


@deprecated("tests.OldThing", since="0.2", removed_in="1.0", instead="tests.Thing")
class OldThing:
    def __init__(self, size: int) -> None:
        self.size = size


def test_a_deprecated_function_still_works_and_warns() -> None:
    result = assert_deprecated(
        lambda: old_add(2, 3), name="tests.old_add", removed_in="0.3", instead="tests.add"
    )
    assert result == 5
    assert old_add.__name__ == "old_add"


def test_the_warning_names_everything_the_policy_promises() -> None:
    with pytest.warns(DeprecationWarning, match="old_add") as caught:
        old_add(1, 1)
    assert str(caught[0].message) == (
        "tests.old_add is deprecated since teams-ehr 0.2 and will be removed in 0.3; "
        "use tests.add instead"
    )
    assert caught[0].filename == __file__


def test_a_deprecated_coroutine_function_stays_awaitable() -> None:
    async def user_code() -> str:
        return await old_fetch("x")  # the warning points here

    result = assert_deprecated(
        lambda: anyio.run(user_code), name="tests.old_fetch", removed_in="0.3"
    )
    assert result == "x"


def test_a_deprecated_class_warns_when_instantiated() -> None:
    thing = assert_deprecated(
        lambda: OldThing(3), name="tests.OldThing", removed_in="1.0", instead="tests.Thing"
    )
    assert isinstance(thing, OldThing)
    assert thing.size == 3


def test_moved_names_serve_the_new_object_and_warn() -> None:
    module = types.ModuleType("tests_moved_home")
    module.__getattr__ = moved_names(  # type: ignore[method-assign]
        "tests_moved_home",
        {
            "OldError": (
                "teams_ehr.errors:UsageError",
                Deprecation("tests_moved_home.OldError", "0.2", "0.3", "teams_ehr.UsageError"),
            )
        },
    )
    sys.modules["tests_moved_home"] = module
    try:
        value = assert_deprecated(
            lambda: module.OldError, name="tests_moved_home.OldError", removed_in="0.3"
        )
        assert value is UsageError
        with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
            _ = module.Nope
    finally:
        del sys.modules["tests_moved_home"]


@pytest.mark.parametrize(
    ("since", "removed_in"),
    [("0.2", "0.2"), ("0.2", "0.2.5"), ("0.2.1", "0.2.9"), ("1.4", "1.3"), ("0.2", "0.3.1")],
)
def test_a_removal_window_shorter_than_one_minor_release_is_refused(
    since: str, removed_in: str
) -> None:
    with pytest.raises(UsageError, match="later minor or major release"):
        Deprecation("tests.x", since, removed_in)


@pytest.mark.parametrize("release", ["1", "v1.2", "1.2.3.4", "01.2", "1.2rc1", ""])
def test_release_numbers_are_major_minor_patch(release: str) -> None:
    with pytest.raises(UsageError, match="not a release number"):
        release_tuple(release)
    assert release_tuple("0.3") == release_tuple("0.3.0") == (0, 3, 0)


def test_assert_deprecated_fails_without_a_warning() -> None:
    with pytest.raises(AssertionError, match="emitted 0 DeprecationWarnings"):
        assert_deprecated(lambda: 1, name="tests.x", removed_in="0.3")


def test_assert_deprecated_fails_on_two_warnings() -> None:
    def twice() -> None:
        old_add(1, 2)
        old_add(3, 4)

    with pytest.raises(AssertionError, match="emitted 2 DeprecationWarnings"):
        assert_deprecated(twice, name="tests.old_add", removed_in="0.3")


def test_assert_deprecated_fails_when_the_warning_omits_the_replacement() -> None:
    with pytest.raises(AssertionError, match=r"does not mention tests\.sum"):
        assert_deprecated(
            lambda: old_add(1, 2), name="tests.old_add", removed_in="0.3", instead="tests.sum"
        )


def test_assert_deprecated_fails_when_the_warning_points_into_the_library() -> None:
    library: dict[str, object] = {}
    source = (
        "import warnings\n"
        "def old():\n"
        "    warnings.warn('tests.y is deprecated and will be removed in 0.3',\n"
        "                  DeprecationWarning, stacklevel=1)\n"
    )
    exec(compile(source, "library.py", "exec"), library)
    with pytest.raises(AssertionError, match=r"points at library\.py:3"):
        assert_deprecated(library["old"], name="tests.y", removed_in="0.3")  # type: ignore[arg-type]


def test_assert_deprecated_fails_once_the_removal_release_is_reached() -> None:
    for version in ("0.3.0", "0.3.0rc1", "0.3.1", "1.0.0"):
        with pytest.raises(AssertionError, match=r"was to be removed in 0\.3"):
            assert_deprecated(
                lambda: old_add(1, 2),
                name="tests.old_add",
                removed_in="0.3",
                current_version=version,
            )
    assert_deprecated(
        lambda: old_add(1, 2), name="tests.old_add", removed_in="0.3", current_version="0.2.9"
    )
