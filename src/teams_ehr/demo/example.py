"""Find the FastAPI example app that ``teams-ehr demo`` serves (requirements E2, E3).

The demo runs ``examples/fastapi_app/app.py``'s ``create_app`` itself, not a copy: from a source
checkout (``pip install -e ".[demo]"``) it is loaded from the repository; a wheel may ship it as
``teams_ehr.demo._fastapi_example``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teams_ehr.app import TeamsEhr
from teams_ehr.errors import ConfigurationError

__all__ = ["EXAMPLE_PATH", "load_fastapi_example"]

EXAMPLE_PATH = Path(__file__).resolve().parents[3] / "examples" / "fastapi_app" / "app.py"
_MODULE = "teams_ehr_examples_fastapi_app"


def load_fastapi_example(path: Path = EXAMPLE_PATH) -> Callable[[TeamsEhr], Any]:
    """The example's ``create_app(runtime) -> FastAPI``."""
    try:
        module: Any = importlib.import_module("teams_ehr.demo._fastapi_example")
    except ModuleNotFoundError:
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise ConfigurationError(
                "the FastAPI example app was not found: run the demo from a source checkout "
                "(pip install -e '.[demo]')",
                reason="example_missing",
            ) from None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    create_app: Callable[[TeamsEhr], Any] = module.create_app
    return create_app
