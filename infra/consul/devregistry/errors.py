"""The one error type handlers raise: it becomes a plain-text answer, as Consul writes them."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
