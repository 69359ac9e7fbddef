"""The package version, read from the installed distribution's metadata (docs/stability.md).

``pyproject.toml`` is the one place the version is written; the build puts it into the wheel's
``METADATA`` and this module reads it back (``importlib.metadata``), so the version a program sees
is the version pip installed. Imported from a tree with no installed distribution (a copied
``src/`` on ``PYTHONPATH``), the version is ``0+unknown``: a PEP 440 local version that sorts
below every release.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "teams-ehr"
UNKNOWN = "0+unknown"


def installed_version(distribution: str = DISTRIBUTION) -> str:
    """The version of ``distribution`` as installed, or :data:`UNKNOWN` when it is not."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return UNKNOWN


__version__ = installed_version()
