"""Errors a servable or the registry raises; the web layer answers each with its status.

:class:`ApiError` carries an HTTP status, a stable machine-readable ``code`` and a message
(the legacy routes answer ``{"error": {"code", "message", ...}}``, the Open Inference Protocol
routes ``{"error": "<message>"}``). The subclasses give the usual statuses their defaults.
"""
from __future__ import annotations


class ApiError(Exception):
    """An error answered with the given HTTP status, ``code`` and message."""

    status = 400
    default_code = "bad_request"

    def __init__(self, *args, **extra):
        # ApiError(status, code, message, **extra), or a subclass's (message, code=None, **extra)
        if args and isinstance(args[0], int):
            status, code, message = args
        else:
            status, message = self.status, args[0]
            code = extra.pop("code", None) or self.default_code
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class InvalidInput(ApiError):
    status, default_code = 400, "invalid_input"


class TooLarge(ApiError):
    status, default_code = 413, "payload_too_large"


class OverLimit(ApiError):
    status, default_code = 422, "over_limit"


class ModelNotFound(ApiError):
    status, default_code = 404, "model_not_found"


class ModelNotReady(ApiError):
    status, default_code = 503, "not_ready"

    def __init__(self, name: str, status: str, reason: str | None = None):
        msg = f"model {name} is not ready ({status})" + (f": {reason}" if reason else "")
        super().__init__(msg, model=name, model_status=status)
        self.name, self.model_status = name, status


class ModelBusy(ApiError):
    status, default_code = 503, "busy"

    def __init__(self, name: str, waited: float):
        super().__init__(f"model {name} is busy: no slot within {waited:g} s, retry later", model=name)
        self.name, self.waited = name, waited


class QuotaExceeded(ApiError):
    """A key's quota (requests per minute, characters per day) is used up: 429 + Retry-After."""
    status, default_code = 429, "quota_exceeded"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, retry_after=retry_after)
