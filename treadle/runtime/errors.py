"""Every error treadle raises derives from :class:`TreadleError`.

Each class's docstring is its default message and ``code`` is the dotted code the HTTP API puts
in ``{"error": {"code": ...}}``. The mapping from class to HTTP status lives in one table in the
dispatcher; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from treadle.runtime._tracebacks import Frame


class TreadleError(Exception):
    """Something went wrong in treadle."""

    code: str = "internal"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, **details: Any
    ) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        if code is not None:
            self.code = code  # a more specific dotted code, e.g. "instance.not_found"
        self.details = details
        super().__init__(self.message)


# -- errors tenant workflow code sees ------------------------------------------------------------


class NonRetryableError(TreadleError):
    """The step failed and must not be retried."""

    code: str = "step.non_retryable"


class StepError(TreadleError):
    """A step failed for good.

    Raised into ``run()`` by ``step.do`` once a step has exhausted its retries (or raised
    :class:`NonRetryableError`). ``name`` is the type name of the step's original error and
    ``message`` its message; ``traceback`` the frames of tenant code it was raised in, when
    the step's body raised it.
    """

    code: str = "step.failed"

    def __init__(self, message: str | None = None, *, name: str = "Error") -> None:
        super().__init__(message or name)
        self.name = name
        self.traceback: list[Frame] = []


class WaitTimeout(TreadleError):
    """No matching event arrived before the wait timed out."""

    code: str = "step.wait_timeout"


# -- errors of the platform and its API -----------------------------------------------------------


class InvalidInput(TreadleError):
    """The request is not valid."""

    code: str = "request.invalid"


class InvalidDuration(InvalidInput):
    """Not a valid duration."""

    code: str = "duration.invalid"


class ValueNotStorable(InvalidInput):
    """The value cannot be stored.

    Stored values are JSON with integers within ±2^53, strings and keys without U+0000 or
    surrogate code points, nested at most 256 levels deep (see ``treadle.runtime._values``). The
    message says where in the value the problem is, and what it is.
    """

    code: str = "value.not_storable"


class UnsupportedMediaType(InvalidInput):
    """The request body is not JSON; send it with ``Content-Type: application/json``."""

    code: str = "request.unsupported_media_type"


class Unauthorized(TreadleError):
    """Missing or invalid credentials."""

    code: str = "auth.unauthorized"


class NotFound(TreadleError):
    """Not found."""

    code: str = "not_found"


class AlreadyExists(TreadleError):
    """It already exists."""

    code: str = "already_exists"


class Conflict(TreadleError):
    """The request conflicts with the current state."""

    code: str = "conflict"


class LinkExpired(TreadleError):
    """This link has expired: it was used up, its time ran out, or its instance has ended."""

    code: str = "link.expired"


class TooLarge(TreadleError):
    """The request is too large."""

    code: str = "request.too_large"


class Problem(TypedDict):
    """One problem of invalid code, at a 1-based line and column."""

    line: int
    column: int
    message: str


class CodeInvalid(TreadleError):
    """The workflow code is not valid."""

    code: str = "code.invalid"

    def __init__(self, message: str | None = None, *, problems: list[Problem]) -> None:
        super().__init__(message, problems=problems)
        self.problems = problems


class QuotaExceeded(TreadleError):
    """A quota or rate limit of the tenant's policy was reached."""

    code: str = "quota.exceeded"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyConnections(QuotaExceeded):
    """Too many connections are open from this address; close some and try again."""

    code: str = "connections.too_many"


class UploadBusy(QuotaExceeded):
    """Too many uploads of this tenant are being checked; try again shortly."""

    code: str = "upload.busy"


class StorageQuotaExceeded(QuotaExceeded):
    """The tenant's storage (max_storage_mb) is used up; delete instances to make room."""

    code: str = "quota.storage"


class TooManyStreams(QuotaExceeded):
    """Too many live streams are open; close one or try again shortly."""

    code: str = "streams.too_many"


class RequestTimeout(TreadleError):
    """The request did not arrive in time."""

    code: str = "request.timeout"


class LimitExceeded(TreadleError):
    """A limit of the tenant's policy was exceeded."""

    code: str = "limit.exceeded"


class Unavailable(TreadleError):
    """The database cannot be reached; try again shortly.

    Nothing about the request is wrong: the same request may succeed once the database answers
    again (``database.unavailable``) or a connection is free (``database.busy``).
    ``retry_after`` is how many seconds to wait first.
    """

    code: str = "database.unavailable"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
