"""What a request may send, checked before anything runs.

A query's options are `QueryOptions`' fields, read from the dataclass itself: a new query
option reaches HTTP without a second list, and its checks (`QueryOptions.__post_init__`) are
the command line's. The body adds the query itself: a JSON `sequence` of letters only (no
newline, no '>': it cannot start records of its own), FASTA text, or named records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from genome_index.errors import GenomeIndexError
from genome_index.io.fasta import Genome, genome_of, parse_fasta
from genome_index.server.limits import Limits
from genome_index.settings import QueryOptions

BASES = r"^[A-Za-z]*$"  # a JSON sequence: letters only (no newline, no '>', so no records of its own)
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"  # a name: no newline or other control character
QUERY_FIELDS = ("sequence", "fasta", "records")


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=ONE_LINE, max_length=1000)
    sequence: str = Field(pattern=BASES)


def _options() -> dict[str, Any]:
    """QueryOptions' fields as pydantic fields: each one's type and default."""
    hints = get_type_hints(QueryOptions)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(QueryOptions)}


QueryBody = create_model(
    "QueryBody",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A query as JSON: one of `sequence`, `fasta` or `records`, and QueryOptions' fields.",
    sequence=(str | None, Field(None, pattern=BASES)),
    fasta=(str | None, None),
    records=(list[Record] | None, None),
    name=(str, Field("query", pattern=ONE_LINE, max_length=1000)),
    **_options(),
)


class SqlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statement: str = Field(max_length=1_000_000)


def explain(exc: ValidationError) -> str:
    """The first problem pydantic found, in one line: `k: Input should be a valid integer`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def query_of(raw: bytes, request: Request, limits: Limits) -> tuple[Genome, QueryOptions]:
    """The query a /query request sends (JSON, or FASTA with the options as query parameters),
    checked against the limits; a bad one is a 4xx with one line."""
    params = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = QueryBody.model_validate_json(raw)
        except ValidationError as exc:
            raise HTTPException(422, f"not a valid query body: {explain(exc)}") from None
    else:
        sent = sorted(set(QUERY_FIELDS) & set(params))
        if sent:
            raise HTTPException(422, f"{sent[0]}: send the sequence as the body, not as a query parameter")
        try:
            body = QueryBody(fasta=raw.decode("utf-8"), **params)
        except UnicodeDecodeError:
            raise HTTPException(400, "the body is not UTF-8 text (send FASTA or FASTQ, not gzip)") from None
        except ValidationError as exc:
            raise HTTPException(422, f"bad query parameters: {explain(exc)}") from None
    try:
        options = QueryOptions(**{f.name: getattr(body, f.name) for f in dataclasses.fields(QueryOptions)})
    except GenomeIndexError as exc:
        raise HTTPException(422, str(exc)) from None
    if options.k > limits.max_k:
        raise HTTPException(422, f"k is at most {limits.max_k}")
    return genome_in(body, limits), options


def genome_in(body: Any, limits: Limits) -> Genome:
    """The query genome of a checked body: its one sequence, its records, or its FASTA text."""
    given = [x for x in (body.sequence, body.fasta, body.records) if x is not None]
    if len(given) != 1:
        raise HTTPException(422, "give exactly one of sequence, fasta or records")
    if body.records is not None:
        if len(body.records) > limits.max_records:
            raise HTTPException(422, f"at most {limits.max_records:,} records a query")
        return genome_of([(r.name, r.sequence) for r in body.records], body.name)
    if body.sequence is not None:
        return genome_of([(body.name, body.sequence)], body.name)
    reads = body.fasta.lstrip().startswith("@")  # FASTQ: four lines a read
    if (body.fasta.count("\n") // 4 + 1 if reads else body.fasta.count(">")) > limits.max_records:
        raise HTTPException(422, f"at most {limits.max_records:,} records a query")
    return parse_fasta(body.fasta, body.name)
