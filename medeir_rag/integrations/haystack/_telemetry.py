"""Privacy by default: Haystack's usage telemetry is off unless the user opted in.

Haystack sends usage telemetry (to PostHog) unless ``HAYSTACK_TELEMETRY_ENABLED`` says
otherwise, and reads that variable once, when ``haystack.telemetry`` is first imported. This
module is imported before anything else of the package: it sets
``HAYSTACK_TELEMETRY_ENABLED=False`` (unless the user set it) before haystack is imported
and, when haystack was imported earlier, switches off the telemetry client haystack already
made. ``HAYSTACK_TELEMETRY_ENABLED=True`` opts in; even then the components add nothing to
the events (``_get_telemetry_data`` is empty: no model path, which can name a patient folder).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from medeir_rag.errors import MissingDependencyError

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # before haystack reads it, at its import

try:
    import haystack  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise MissingDependencyError(
        f"haystack-ai is not installed ({error}); install it with: pip install 'medeir_rag[haystack]'"
    ) from error

if os.environ["HAYSTACK_TELEMETRY_ENABLED"].lower() not in ("true", "1"):
    # not opted in, but haystack was imported before this package and made its client already
    _haystack_telemetry = sys.modules.get("haystack.telemetry._telemetry")
    if getattr(_haystack_telemetry, "telemetry", None) is not None:
        _haystack_telemetry.telemetry = None


class NoTelemetry:
    """Mixin: a component that reports nothing about itself to Haystack's telemetry."""

    def _get_telemetry_data(self) -> dict[str, Any]:
        # nothing about the model (a local path can name a patient folder) goes into telemetry
        return {}
