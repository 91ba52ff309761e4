"""DotDigital's two error envelopes: v2 `{"message": "... ERROR_X"}`, v3 `{errorCode, description, details}`."""

from __future__ import annotations

from typing import Any

AUTH_DENIED = "Authorization has been denied for this request."


class ApiError(Exception):
    """An error answer; rendered in the envelope of the API family the request was made to."""

    def __init__(
        self,
        status: int,
        *,
        message: str | None = None,
        code: str | None = None,
        description: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or description or code or str(status))
        self.status = status
        self.message = message
        self.code = code
        self.description = description
        self.details = details
        self.headers = headers or {}

    def body(self, family: str) -> dict[str, Any]:
        if family == "v2":
            if self.message is not None:
                return {"message": self.message}
            return {"message": self.description or self.code or "Error"}
        body: dict[str, Any] = {
            "errorCode": self.code or "server:error",
            "description": self.description or self.message or "Error",
        }
        if self.details:
            body["details"] = self.details
        return body


def v2(status: int, token: str, text: str | None = None) -> ApiError:
    """A v2 error in one of the two spellings DotDigital uses: 'Text. ERROR_X' or 'Error: ERROR_X'."""
    return ApiError(status, message=f"{text} {token}" if text else f"Error: {token}")


def v3(
    status: int, code: str, description: str, details: list[dict[str, str]] | None = None
) -> ApiError:
    return ApiError(status, code=code, description=description, details=details)


def detail(item: str, description: str) -> dict[str, str]:
    return {"item": item, "description": description}
