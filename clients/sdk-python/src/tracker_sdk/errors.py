from __future__ import annotations


class TrackerError(Exception):
    """A refused input or answer. ``code`` is the platform's error code where there is one (``reserved_param``)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
