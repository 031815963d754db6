"""Read W&B offline run files (``run-<id>.wandb``) without network or wandb internals.

wandb ≥ 0.19 writes offline runs from its Go core and no longer ships a Python reader, so the
sweep/resume tests parse the transaction log themselves: a LevelDB-style log (7-byte file
header, 32 KiB blocks, records of crc32 · length · type · payload, chunked across blocks)
holding ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    pos, chunks = 7, []  # skip ":W&B" + magic (2 bytes) + version (1 byte)
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # block tail too short for a record header: zero padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            chunks = [chunk]
        elif kind == _MIDDLE:
            chunks.append(chunk)
        elif kind == _LAST:
            chunks.append(chunk)
            yield b"".join(chunks)


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"id", "group", "job_type", "name", "tags", "config"}`` of an ``offline-run-*`` folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    info: dict[str, Any] = {"config": {}}
    for payload in _payloads(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            info |= {"id": r.run_id, "group": r.run_group, "job_type": r.job_type}
            info |= {"name": r.display_name, "tags": list(r.tags)}
            updates = r.config.update
        elif kind == "config":
            updates = rec.config.update
        else:
            continue
        for item in updates:
            key = item.key or "/".join(item.nested_key)
            info["config"][key] = json.loads(item.value_json)
    return info
