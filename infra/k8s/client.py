"""The kubernetes client, built once per runtime, and its errors turned into one-line failures."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from infra.runtime.base import RuntimeFailure

T = TypeVar("T")


def default_api_client() -> client.ApiClient:
    """The current kubeconfig context, or the pod's service account inside the cluster."""
    try:
        return config.new_client_from_config()
    except Exception as kube_error:
        try:
            config.load_incluster_config()
        except Exception:
            raise RuntimeFailure(f"no usable kubeconfig: {kube_error}") from None
        return client.ApiClient()


@dataclass(frozen=True)
class ProxyAnswer:
    """What a pod answered through the API server's proxy (any status, headers lower-case)."""

    status: int
    headers: Mapping[str, str]
    text: str


class Kube:
    """The API groups the runtime uses (custom objects: KEDA's ScaledObjects), with errors as
    :class:`RuntimeFailure`."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or default_api_client()
        self.host = str(self.api_client.configuration.host)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        # What make k8s-up checks and cleans (infra/k8s/deploy.py).
        self.batch = client.BatchV1Api(self.api_client)
        self.storage = client.StorageV1Api(self.api_client)
        self.registration = client.ApiregistrationV1Api(self.api_client)
        self.extensions = client.ApiextensionsV1Api(self.api_client)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise RuntimeFailure(f"{what}: {_api_message(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise RuntimeFailure(
                f"{what}: the API server at {self.host} did not answer ({exc})"
            ) from None

    def proxy_get(
        self,
        path: str,
        query: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> ProxyAnswer:
        """``GET`` through the API server's proxy subresource (``.../pods/NAME:PORT/proxy/...``,
        ``.../services/NAME:PORT/proxy/...``), so meshctl reaches pods with nothing but its
        kubeconfig. The generated ``connect_get_*_proxy_with_path`` methods would percent-encode
        the slashes of a sub-path and take no headers, hence ``call_api`` with the path as is.
        """
        try:
            response = self.api_client.call_api(
                path,
                "GET",
                query_params=query or [],
                header_params={"Accept": "*/*", **(headers or {})},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as exc:
            if not exc.status:
                raise RuntimeFailure(f"GET {path}: {exc.reason}") from None
            # The pod's own error answer (or the API server's, when the pod is unreachable).
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
            return ProxyAnswer(exc.status, _lower(exc.headers), str(body or ""))
        except (HTTPError, OSError) as exc:
            raise RuntimeFailure(
                f"GET {path}: the API server at {self.host} did not answer ({exc})"
            ) from None
        return ProxyAnswer(
            response.status, _lower(response.headers), response.data.decode(errors="replace")
        )


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}


def not_found(exc: RuntimeFailure) -> bool:
    return "(404)" in str(exc)


def _api_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status object, else the HTTP reason."""
    message = ""
    try:
        message = str(json.loads(exc.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        pass
    return f"{message or exc.reason} ({exc.status})"
