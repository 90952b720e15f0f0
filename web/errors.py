"""Errors of the web UI, each with the HTTP status it answers with (one handler renders them as a page
or as JSON)."""

from __future__ import annotations


class WebError(Exception):
    """Root of the web UI's errors."""

    status = 500


class BadRequestError(WebError, ValueError):
    """A parameter out of its bounds."""

    status = 400


class ForbiddenError(WebError, PermissionError):
    """A write without the token (or with a wrong one)."""

    status = 403


class NotFoundError(WebError, LookupError):
    """No such model, family or page."""

    status = 404
