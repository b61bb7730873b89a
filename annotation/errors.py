"""Typed errors of the annotation package (mapped to signaling/HTTP errors at the edges)."""

from __future__ import annotations


class AnnotationError(Exception):
    """An error with a stable code that a client can act on."""

    code: str = "annotation_error"
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class UnsupportedDocument(AnnotationError):
    """The uploaded bytes are not a PNG, JPEG, PDF or DICOM file we can read."""

    code = "unsupported_document"
    http_status = 415


class DocumentTooLarge(AnnotationError):
    """Byte size, pixel count, page or frame count over the configured bounds."""

    code = "document_too_large"
    http_status = 413


class InvalidDocument(AnnotationError):
    """The file claims a known type but does not decode."""

    code = "invalid_document"
    http_status = 422


class DocumentNotFound(AnnotationError):
    """No such document in this room."""

    code = "document_not_found"
    http_status = 404


class PermissionDenied(AnnotationError):
    """The caller lacks the grant needed (annotate) or the token is invalid."""

    code = "forbidden"
    http_status = 403


class MalformedMessage(AnnotationError):
    """A y-protocols message or update that does not decode; the document is left untouched."""

    code = "malformed_update"
    http_status = 400


class MessageTooLarge(AnnotationError):
    """A sync or awareness message over the size bound."""

    code = "update_too_large"
    http_status = 413


class DocumentFull(AnnotationError):
    """The document's state reached its size bound; further changes are refused."""

    code = "document_full"
    http_status = 413
