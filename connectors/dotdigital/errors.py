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
