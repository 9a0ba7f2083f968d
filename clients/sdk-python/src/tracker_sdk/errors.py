from __future__ import annotations

import json


class TrackerError(Exception):
    """A refused input or answer. ``code`` is the platform's error code where there is one (``reserved_param``)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    @classmethod
    def from_answer(cls, status: int, body: bytes) -> "TrackerError":
        """The platform's ``{"error": {"code", "message"}}``, or the text of whatever answered."""
        code, message = f"http_{status}", body[:500].decode(errors="replace")
        try:
            problem = json.loads(body)["error"]
            code, message = problem.get("code", code), problem.get("message", message)
        except (ValueError, KeyError, TypeError):
            pass
        return cls(code, message, status)
