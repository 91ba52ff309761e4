"""DotDigital's failures as one exception hierarchy, in the three classes the engine acts on.

`ConnectorError(message, permanent=...)` is the one error type of a connector (conventions §6):
`permanent=False` means "try the same call again later" (`retry_after` says when, if known);
`permanent=True` means retrying the same call cannot help. Of the permanent ones,
`ConnectionProblem` is about the whole connection (pause it, keep the operations queued) and
`RecordError` about one record (open an exception for its group).

Messages carry DotDigital's code and text and never the credentials or the Authorization header.
"""

from __future__ import annotations

import re
from typing import Any

ERROR_TOKEN = re.compile(r"ERROR_[A-Z0-9_]+")


class ConnectorError(Exception):
    permanent: bool = False

    def __init__(self, message: str, *, permanent: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if permanent is not None:
            self.permanent = permanent


class DotDigitalError(ConnectorError):
    """An answer (or a failure to get one) from DotDigital.

    `status` is the HTTP status (None when no answer came), `code` DotDigital's code (v3
    `errorCode` such as `contacts:invalidId`, or the v2 `ERROR_*` token), `text` its description,
    `details` the v3 `details` list.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        text: str = "",
        details: list[dict[str, Any]] | None = None,
        method: str = "",
        path: str = "",
        permanent: bool | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent)
        self.status = status
        self.code = code
        self.text = text
        self.details = details or []
        self.method = method
        self.path = path


# -- retryable --------------------------------------------------------------------------------


class RetryableError(DotDigitalError):
    """Try again later; `retry_after` is seconds from now when DotDigital (or the budget) said."""

    permanent = False

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429, ERROR_APIUSAGE_EXCEEDED, or the shared budget has no room in this window."""


class TooManyImports(RetryableError):
    """DotDigital's cap on concurrent imports (25 contact / 5 insight), or ours in front of it."""


class ServerError(RetryableError):
    """5xx, or ERROR_SYSTEM_SERVICETEMPORARILYUNAVAILABLE / ERROR_ADDRESSBOOK_IN_USE."""


class CallTimeout(RetryableError):
    """No answer within the call class's timeout. The call may still have been applied."""


class ConnectionDropped(RetryableError):
    """The connection was refused, reset or closed before an answer arrived."""


class NotSent(ConnectionDropped):
    """No connection was made (refused, or none within the connect timeout): the request never
    reached DotDigital, so nothing of it was applied and it is safe to send again."""


# -- the connection ---------------------------------------------------------------------------


class ConnectionProblem(DotDigitalError):
    """The connection itself cannot work: pause it (one alert), keep its operations queued."""

    permanent = True


class AuthenticationFailed(ConnectionProblem):
    """401: the API user or its password is wrong (or was changed)."""


class WrongRegion(ConnectionProblem):
    """403 Access is denied: the account lives in another region than the endpoint called."""


class FeatureNotActive(ConnectionProblem):
    """ERROR_FEATURENOTACTIVE: the account's package lacks the feature (e.g. insight data)."""


class AllowanceExceeded(ConnectionProblem):
    """A storage or usage allowance of the account is used up (e.g. insight data storage)."""


# -- one record -------------------------------------------------------------------------------


class RecordError(DotDigitalError):
    """This record (or this call's input) is wrong; resending it unchanged cannot succeed."""

    permanent = True


class ValidationFailed(RecordError):
    """400/409/422 validation: bad identifier, bad JSON, unknown list, duplicate identifier..."""


class DataFieldError(RecordError):
    """A data field does not exist, or the value does not fit its type."""


class SchemaMismatch(RecordError):
    """An insight value does not fit the collection's schema, locked on first write."""


class NotFound(RecordError):
    """The thing addressed (import, list, program, record) does not exist."""


def error_token(text: str) -> str:
    """The v2 `ERROR_*` token in a message, or ''."""
    match = ERROR_TOKEN.search(text or "")
    return match.group(0) if match else ""


# -- in words -----------------------------------------------------------------------------------

RETRIES_ITSELF = "Syncdesk tries again by itself; nothing is lost."
FIX_CONNECTION = (
    "An admin corrects it on the DotDigital connection's page (Test connection checks it)."
)
FIX_RECORD = "Sending it again unchanged cannot succeed: correct the mapping or the data first."


def _wait(seconds: float | None) -> str:
    if not seconds:
        return ""
    if seconds < 90:
        return f" (for about {max(round(seconds), 1)} s)"
    if seconds < 5400:
        return f" (for about {round(seconds / 60)} min)"
    return f" (for about {round(seconds / 3600)} h)"


def _said(exc: DotDigitalError) -> str:
    """DotDigital's own description, when it says more than the HTTP status's name."""
    text = (exc.text or "").strip().rstrip(".")
    if not text or text.lower() in _REASONS:
        return ""
    return text


_REASONS = {
    "too many requests",
    "internal server error",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "unauthorized",
    "forbidden",
    "not found",
    "bad request",
    "conflict",
    "unprocessable entity",
}


def explain(exc: ConnectorError, *, retry: str = RETRIES_ITSELF) -> str:
    """The error as a person reads it: what went wrong, in a sentence, and what happens next
    (`retry` for the errors that pass by themselves). Never the HTTP exchange
    ("GET /v2/data-fields -> 429 : Too Many Requests"): that stays in the logs."""
    if not isinstance(exc, DotDigitalError):
        return exc.message
    said = _said(exc)
    detail = f" DotDigital said: “{said}”." if said else ""
    if isinstance(exc, TooManyImports):
        return (
            f"DotDigital is already running as many imports as it allows for this account. {retry}"
        )
    if isinstance(exc, RateLimited):
        return (
            "DotDigital is limiting how many calls this account may make right now"
            f"{_wait(getattr(exc, 'retry_after', None))}. {retry}"
        )
    if isinstance(exc, ServerError):
        return f"DotDigital had a temporary problem on its side.{detail} {retry}"
    if isinstance(exc, CallTimeout):
        return f"DotDigital did not answer in time. {retry}"
    if isinstance(exc, ConnectionDropped):
        return f"Syncdesk could not reach DotDigital (the connection failed). {retry}"
    if isinstance(exc, AuthenticationFailed):
        return f"DotDigital refused the connection's API user or its password. {FIX_CONNECTION}"
    if isinstance(exc, WrongRegion):
        return (
            "DotDigital denied access: the account is served from another region than the API "
            f"endpoint called. {FIX_CONNECTION}"
        )
    if isinstance(exc, FeatureNotActive):
        return (
            "The DotDigital account's package lacks a feature Syncdesk needs (insight data, say)."
            f"{detail} Ask DotDigital to turn it on; then Test connection resumes delivery."
        )
    if isinstance(exc, AllowanceExceeded):
        return (
            f"The DotDigital account has used up an allowance (storage, say).{detail} Free some "
            "or raise it with DotDigital; then Test connection resumes delivery."
        )
    if isinstance(exc, NotFound):
        return f"DotDigital does not have what was asked for.{detail} {FIX_RECORD}"
    if isinstance(exc, SchemaMismatch):
        return (
            "The value does not fit the insight collection's schema, which DotDigital locked when "
            f"it was first written.{detail} {FIX_RECORD}"
        )
    if isinstance(exc, DataFieldError):
        return f"DotDigital refused a data field or its value.{detail} {FIX_RECORD}"
    if isinstance(exc, RecordError):
        return f"DotDigital refused the request.{detail} {FIX_RECORD}"
    return f"DotDigital answered with an error.{detail} {retry}"
