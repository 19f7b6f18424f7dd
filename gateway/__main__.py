"""``python -m gateway``: serve the gateway with the kit's graceful shutdown."""

from gateway.app import build, listen
from gateway.settings import GatewaySettings
from services.common.app import run

run(build, GatewaySettings, listen)
