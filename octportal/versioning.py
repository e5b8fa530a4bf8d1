"""API versions: ``request.version`` is ``"v1"`` under ``/api/v1/`` (URL namespace ``v1``)
and ``None`` on the unversioned ``/api/`` aliases, which keep their first behaviour.

Its own module (importing only DRF's versioning) because DRF loads it while defining APIView.
"""
from __future__ import annotations

from rest_framework.versioning import NamespaceVersioning

API_VERSION = "v1"


class ApiVersioning(NamespaceVersioning):
    allowed_versions = (API_VERSION,)

    def determine_version(self, request, *args, **kwargs) -> str | None:
        match = getattr(request, "resolver_match", None)
        namespaces = match.namespace.split(":") if match is not None and match.namespace else []
        return API_VERSION if API_VERSION in namespaces else None
