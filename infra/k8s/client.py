"""The kubernetes client, built once per runtime, and its errors turned into one-line failures."""

from __future__ import annotations

import json
from collections.abc import Callable
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


class Kube:
    """The three API groups the runtime uses, with errors as :class:`RuntimeFailure`."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or default_api_client()
        self.host = str(self.api_client.configuration.host)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise RuntimeFailure(f"{what}: {_api_message(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise RuntimeFailure(
                f"{what}: the API server at {self.host} did not answer ({exc})"
            ) from None


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
