"""The catalog's JSON-seq export in large writes (`nanostrain.json_seq`): the same
records as bluesky-tiled-plugins' exporter, joined into writes of >= WRITE_BYTES.

Here the plugin's exporter is stood in for by records of chosen sizes (to reach every
boundary case); the real one runs behind every replay test, over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from nanostrain import json_seq


@pytest.mark.parametrize("sizes", [[], [10], [100] * 50, [json_seq.WRITE_BYTES + 5, 3, json_seq.WRITE_BYTES - 3, 7]])
def test_records_are_joined_into_large_writes_and_nothing_is_lost(monkeypatch, sizes):
    records = ["\x1e" + "x" * (size - 2) + "\n" for size in sizes]
    seen = {}

    async def document_records(mimetype, adapter, metadata, filter_for_access):
        seen["args"] = (mimetype, adapter, metadata, filter_for_access)
        for record in records:
            yield record

    monkeypatch.setattr(json_seq, "document_records", document_records)

    async def collect():
        return [chunk async for chunk in json_seq.json_seq_exporter("application/json-seq", "node", {"start": {}}, "f")]

    writes = asyncio.run(collect())
    assert "".join(writes) == "".join(records)
    assert all(len(write) >= json_seq.WRITE_BYTES for write in writes[:-1])
    assert len(writes) <= 1 + sum(sizes) // json_seq.WRITE_BYTES
    assert seen["args"] == ("application/json-seq", "node", {"start": {}}, "f")
