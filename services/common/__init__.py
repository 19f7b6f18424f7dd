"""The service kit shared by every service and the gateway (see README.md)."""
