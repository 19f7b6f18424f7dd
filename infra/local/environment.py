"""The environment of a replica: infra addresses, the kit's settings, the version's extras."""

from __future__ import annotations

from dataclasses import dataclass

from infra.local.catalog import Platform, ServiceSpec
from infra.local.files import GatewaySecrets, HomeFiles
from infra.local.replica import HOST
from infra.runtime.versions import Resources, version_env, version_resources


@dataclass(frozen=True)
class ReplicaEnvironment:
    platform: Platform
    files: HomeFiles
    infra_env: dict[str, str]
    secrets: GatewaySecrets

    def build(self, spec: ServiceSpec, version: str, port: int) -> dict[str, str]:
        """Later entries win: kit defaults for the local runtime < the catalogue's ``env`` <
        the version's file < what only the supervisor may decide (name, version, port)."""
        runtime = self.platform.runtime
        env = {
            # Inherited values would name another instance; blank means "derive it".
            "ADVERTISE_ADDRESS": "",
            "SERVICE_TAGS": "",
            **self.infra_env,
            "MESH_TRACES_DIR": str(self.files.traces),
            "CHECK_INTERVAL": f"{runtime.check_interval}",
            "CHECK_TIMEOUT": f"{runtime.check_timeout}",
            "DEREGISTER_CRITICAL_AFTER": f"{runtime.deregister_critical_after}",
            "SHUTDOWN_GRACE_SECONDS": f"{runtime.shutdown_grace}",
            "ADMIN_TOKEN": self.secrets.service_admin_token,
            **spec.env,
            **version_env(self.platform.versions_dir, spec.name, version),
            "SERVICE_NAME": spec.name,
            "SERVICE_VERSION": version,
            "HOST": HOST,
            "PORT": str(port),
        }
        if spec.kind == "gateway":
            env.update(
                GATEWAY_PORT=str(port),
                GATEWAY_API_KEYS=self.secrets.api_key,
                GATEWAY_ADMIN_TOKEN=self.secrets.admin_token,
            )
        return env

    def resources(self, spec: ServiceSpec, version: str) -> Resources:
        """The version's requests and limits (its file over ``defaults.env``)."""
        return version_resources(self.platform.versions_dir, spec.name, version)
