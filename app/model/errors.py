"""Domain errors of the model layer. Each carries a message meant for a human; the HTTP layer
maps the class to a status code (SchemaError -> 422, CheckpointError -> start-up failure)."""

from __future__ import annotations


class UninluError(Exception):
    """Base class: `str(err)` is the human message."""


class CheckpointError(UninluError):
    """The model directory cannot be loaded (missing file, bad config, wrong keys or shapes)."""


class SchemaError(UninluError):
    """The extraction schema is not a valid nested mapping of type names."""


class InputError(UninluError):
    """A request input other than the schema is unusable (e.g. text is not a string)."""


class TooComplex(UninluError):
    """One request would expand to more prompt rows than allowed (a nested schema over many
    spans); refusing it before the rows are built keeps it from holding the worker or memory."""

    def __init__(self, limit: int):
        super().__init__(
            f"the request needs more than {limit} prompt rows (a nested schema over a text with "
            "many spans at an outer level); use a shorter text or a shallower schema"
        )

    @classmethod
    def cost(cls, estimate: int, limit: int, certain: bool = False) -> TooComplex:
        """Over the cost budget: `estimate` model tokens (text windows x prompt rows) against
        MAX_REQUEST_COST."""
        err = cls.__new__(cls)
        what = "would reach" if certain else "is estimated at"
        UninluError.__init__(
            err,
            f"the request {what} {estimate} model tokens (text windows x prompt rows of the "
            f"schema), above the limit MAX_REQUEST_COST={limit}; use a shorter text or fewer "
            "types per request",
        )
        return err
