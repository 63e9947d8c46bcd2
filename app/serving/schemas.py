"""Request, response and error bodies of the HTTP API (DESIGN.md §3); the OpenAPI page shows them.

Limits that depend on settings (text length, schema depth and size, batch items) are checked by
the server, not here, so that each maps to its own status code and message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

_SCHEMA_DOC = (
    "What to extract: an object whose keys are type names and whose values are null (a leaf) "
    "or a nested object of the same kind (types extracted relative to each span found for the "
    'parent). Either the object itself or its JSON text. Example: {"人物": {"所属机构": null}}.'
)


class PredictRequest(BaseModel):
    """One text and the schema of what to extract from it."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "text": "去年秋天，陈晓明在南京大学做了一场关于机器人的报告。",
                    "schema": {"人物": None, "地理位置": None, "组织机构": None},
                }
            ]
        },
    )

    text: str = Field(
        description="The text to analyse (Chinese; classification tasks put "
        "'label1,label2|' in front of it)."
    )
    # Any here, described as object-or-string: the schema's rules live in one place,
    # app.model.pipeline.parse_schema, whose messages name the problem ("got array", "at 人物/x").
    schema_: Annotated[
        Any,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
                    {"type": "string"},
                ]
            }
        ),
    ] = Field(alias="schema", description=_SCHEMA_DOC)
    output_all_prefix: bool = Field(
        default=False, description="Also return the chains that end at an inner schema node."
    )


class SpanItem(BaseModel):
    """One extracted span: its type, its text and its character offsets [start, end)."""

    type: str
    span: str
    offset: list[int] = Field(min_length=2, max_length=2)


class PredictResponse(BaseModel):
    """Each output item is a chain of spans from the schema root down to a leaf."""

    output: list[list[SpanItem]]


class BatchRequest(BaseModel):
    """Several independent predictions in one call (they share batches with other requests)."""

    model_config = ConfigDict(extra="forbid")

    items: list[PredictRequest] = Field(min_length=1)


class BatchResponse(BaseModel):
    """One result per item, in the order of the items."""

    results: list[PredictResponse]


class Example(BaseModel):
    """One example request: a /predict body with its task type."""

    model_config = ConfigDict(populate_by_name=True)

    task: str = Field(description="The task type, e.g. relation_extraction.")
    label: str = Field(description="The task's name on the web page.")
    text: str = Field(description="The text of the /predict body.")
    schema_: dict[str, Any] = Field(alias="schema", description="The schema of the /predict body.")


class ExamplesResponse(BaseModel):
    """The project's example requests (app/model/examples.json), one per task type."""

    examples: list[Example]


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable cause, e.g. invalid_schema, overloaded.")
    message: str = Field(description="What went wrong, for a human.")


class ErrorResponse(BaseModel):
    """Every error answer has this shape."""

    error: ErrorDetail


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
