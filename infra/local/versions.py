"""Versions of a service: the reader of ``infra/versions`` lives in
:mod:`infra.runtime.versions` (every runtime reads the same files); these names stay here
for the callers that import them from the local runtime."""

from __future__ import annotations

from infra.runtime.versions import (
    VersionError,
    parse_env_file,
    version_env,
    version_file,
    version_resources,
)

__all__ = ["VersionError", "parse_env_file", "version_env", "version_file", "version_resources"]
