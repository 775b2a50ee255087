"""The error a request gets instead of a result: an HTTP status and OpenAI's error body."""

from __future__ import annotations

from model_worker.protocol import ErrorBody, ErrorDetail

#: the status counted for a request whose client left before the answer (nginx's 499)
CLIENT_CLOSED = 499


class ServingError(Exception):
    """A request that gets an OpenAI-style error body instead of a result."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            error=ErrorDetail(message=message, type=type_, param=param, code=code)
        )
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ServingError:
    """A 400 for a client mistake."""
    return ServingError(400, message, param=param, code=code)
