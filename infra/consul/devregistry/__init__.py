"""A development registry that speaks a faithful subset of Consul's HTTP API.

No ``consul`` binary can be installed on the machines this platform is built on, so the
local runtime runs this instead; py-consul and the platform's own clients work against it
as against ``consul agent -dev``. See ``infra/consul/README.md`` for what it implements.
"""

from .app import make_app

__all__ = ["make_app"]
