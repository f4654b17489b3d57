#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_routing_trace, fuzz_token_probabilities, fuzz_import
and fuzz_store_rows (corpus/routing_trace, corpus/token_probabilities, corpus/import,
corpus/store_rows): routing-trace blobs in the "CRT1" encoding of
storage/src/routing_trace.cpp (stored and deflated, 1- and 2-byte ids), token
probabilities in the "CTP1" encoding of storage/src/token_probabilities.cpp, small export files in the "cetus-conversations" format that carry
them, and lists of hand edits in fuzz_store_rows.cpp's format.
Usage: python3 tests/fuzz/make_storage_seeds.py"""
import base64
import json
import os
import struct
import zlib

here = os.path.dirname(os.path.abspath(__file__))


def crt1(n_tokens, n_layers, top_k, first_layer, ids, weights, deflate):
    n = n_tokens * n_layers * top_k
    assert len(ids) == len(weights) == n
    id_bytes = 1 if max(ids, default=0) < 256 else 2
    max_w = max(weights, default=0.0)
    scale = struct.unpack("<f", struct.pack("<f", max_w / 255.0 if max_w > 0 else 1.0))[0]
    raw = bytes(ids) if id_bytes == 1 else b"".join(struct.pack("<H", i) for i in ids)
    raw += bytes(min(255, max(0, round(w / scale))) for w in weights)
    packed = zlib.compress(raw, 6)
    deflated = deflate and len(packed) < len(raw)
    payload = packed if deflated else raw
    header = b"CRT1" + bytes([id_bytes, 1, 1 if deflated else 0, 0])
    header += struct.pack("<IHHHHfI", n_tokens, n_layers - 1, top_k, first_layer, 0, scale, len(payload))
    crc = zlib.crc32(raw, zlib.crc32(header))
    return header + struct.pack("<I", crc) + payload


def trace(n_tokens, n_layers, top_k, n_experts, deflate, first_layer=1):
    ids, weights = [], []
    for t in range(n_tokens):
        for layer in range(n_layers):
            chosen = sorted({(t * 7 + layer * 3 + k * 5) % n_experts for k in range(top_k)})
            while len(chosen) < top_k:
                chosen.append(max(chosen) + 1)
            ids += chosen
            weights += [2.5 * (k + 1) / (top_k * (top_k + 1) / 2) for k in range(top_k)]
    return crt1(n_tokens, n_layers, top_k, first_layer, ids, weights, deflate)


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


blobs = {
    "stored_small": trace(3, 2, 2, 16, False),
    "deflated_demo": trace(40, 2, 2, 16, True),
    "wide_ids": trace(4, 3, 8, 300, False, first_layer=3),
    "empty": crt1(0, 1, 1, 0, [], [], False),
}
for name, blob in blobs.items():
    write(os.path.join(here, "corpus", "routing_trace"), name, blob)


def ctp1(top_n, tokens, deflate):
    """tokens: [(logprob, [(text, logprob)] * top_n)]"""
    raw = b""
    for lp, alts in tokens:
        assert len(alts) == top_n
        raw += struct.pack("<f", lp)
        for text, alp in alts:
            t = text.encode()
            raw += struct.pack("<fB", alp, len(t)) + t
    packed = zlib.compress(raw, 6)
    deflated = deflate and len(packed) < len(raw)
    payload = packed if deflated else raw
    header = b"CTP1" + bytes([top_n, 1 if deflated else 0, 0, 0])
    header += struct.pack("<III", len(tokens), len(raw), len(payload))
    crc = zlib.crc32(raw, zlib.crc32(header))
    return header + struct.pack("<I", crc) + payload


words = [" the", "Paris", "\n", " \u6771\u4eac", "<\uff5cend\u2581of\u2581sentence\uff5c>", ""]
probabilities = {
    "empty": ctp1(5, [], False),
    "stored_small": ctp1(2, [(-0.25, [(" the", -0.25), ("\n", -3.5)]), (0.0, [("Paris", 0.0), ("", float("-inf"))])], False),
    "deflated_answer": ctp1(5, [(-0.1 * (t % 7), [(words[(t + k) % 6], -0.1 * (t % 7) - k) for k in range(5)])
                                for t in range(60)], True),
    "no_alternatives": ctp1(0, [(-1.5, []), (-0.0, [])], False),
}
for name, blob in probabilities.items():
    write(os.path.join(here, "corpus", "token_probabilities"), name, blob)


def message(i, parent, role, content, trace_blob=None, state="complete", probabilities_blob=None):
    m = {"id": i, "parent": parent, "role": role, "state": state, "created_ms": 1764500000000 + i,
         "updated_ms": 1764500000000 + i, "stats": {} if role != "assistant" else {"n_generated_tokens": 3},
         "content": content}
    if trace_blob is not None:
        m["routing_trace"] = base64.b64encode(trace_blob).decode()
    if probabilities_blob is not None:
        m["token_probabilities"] = base64.b64encode(probabilities_blob).decode()
    return m


def conversation(uuid, messages, active, title="A chat"):
    return {"uuid": uuid, "title": title, "model": "cetus-demo", "system_prompt": "Be brief.\nAnd kind.",
            "sampling": {"temperature": 0.7, "top_p": 0.9}, "pinned": False, "archived": False,
            "created_ms": 1764500000000, "updated_ms": 1764500000099, "active_message": active,
            "messages": messages}


branching = conversation("0a1b2c3d-0000-4000-8000-000000000001", [
    message(1, None, "user", "What is latent attention?"),
    message(2, 1, "assistant", "It caches a compressed vector.", blobs["stored_small"]),
    message(3, 1, "assistant", "A smaller cache.", blobs["deflated_demo"], state="interrupted"),
    message(4, 3, "user", "Thanks \u00e9\u4e2d\U0001F600"),
], 4)
plain = conversation("0a1b2c3d-0000-4000-8000-000000000002", [
    message(1, None, "system", "system text"),
    message(2, 1, "user", "hi"),
    message(3, 2, "assistant", "```\ncode\n```", state="error"),
], None, title="")
for name, doc in {"branches": [branching], "two": [branching, plain], "none": []}.items():
    text = json.dumps({"format": "cetus-conversations", "format_version": 1, "conversations": doc})
    write(os.path.join(here, "corpus", "import"), name + ".json", text.encode())
# Format 2: an answer with its token probabilities.
with_probabilities = conversation("0a1b2c3d-0000-4000-8000-000000000003", [
    message(1, None, "user", "Capital of France?"),
    message(2, 1, "assistant", "Paris", blobs["stored_small"], probabilities_blob=probabilities["stored_small"]),
], 2)
text = json.dumps({"format": "cetus-conversations", "format_version": 2, "conversations": [with_probabilities]})
write(os.path.join(here, "corpus", "import"), "probabilities.json", text.encode())


# fuzz_store_rows: a flags byte, then edits. Column numbers index k_columns,
# values start with their kind (1: k_integers[i], which is i for i <= 12;
# 4: a blob of 4*n bytes; 5: a double's bits; 6: k_texts[i]). The store it edits
# has messages 1-5 in conversation 1 (2 and 5 answer 1, 3 follows 2, 4 answers 3),
# 6-7 in the archived conversation 2, and an empty conversation 3.
UPDATE, DELETE, COPY, FTS_ADD, FTS_DELETE = range(5)
CONV_ID, CONV_UUID, CONV_SAMPLING, CONV_CREATED, CONV_ACTIVE = 0, 1, 5, 8, 10
MSG_ID, MSG_CONV, MSG_PARENT, MSG_ROLE, MSG_STATE, MSG_WRITER, MSG_STATS, MSG_UPDATED = 11, 12, 13, 14, 16, 17, 18, 20
TRACE_DATA = 23
INT_MAX64, INT_MIN64 = 15, 16
TEXT = {"streaming": 4, "[]": 10, "{\"a\":": 15, "quokka": 17, "sea": 18, "1:1:1": 19, "NOT-A-UUID": 21}


def integer(i):
    return bytes([1, i])


def text(name):
    return bytes([6, TEXT[name]])


def update(column, row, value):
    return bytes([UPDATE, column, row]) + value


edits = {
    "parent_cycle": bytes([0]) + update(MSG_PARENT, 0, integer(3)),
    "parent_later": bytes([0]) + update(MSG_PARENT, 2, integer(5)) + update(MSG_PARENT, 1, integer(6)),
    "self_parent": bytes([0]) + update(MSG_PARENT, 3, integer(4)) + update(CONV_ACTIVE, 0, integer(4)),
    "bad_uuid": bytes([0]) + update(CONV_UUID, 0, text("NOT-A-UUID")),
    "trace_garbage": bytes([0]) + update(TRACE_DATA, 0, bytes([4, 3]) + b"CRT1" + bytes(8)),
    "unknown_role": bytes([1]) + update(MSG_ROLE, 0, text("sea")) + update(MSG_STATE, 5, text("quokka")),
    "index_out_of_step": bytes([0, FTS_ADD]) + integer(INT_MAX64) + text("quokka") +
    bytes([FTS_DELETE]) + integer(1) + text("sea"),
    "streaming_dead_writer": bytes([0]) + update(MSG_STATE, 6, text("streaming")) + update(MSG_WRITER, 6, text("1:1:1")),
    "moved_ids": bytes([0]) + update(MSG_ID, 0, integer(INT_MAX64)) + update(CONV_ACTIVE, 1, bytes([1, 13])) +
    update(CONV_ID, 0, integer(0)) + bytes([DELETE, 0, 2]),
    "json_not_objects": bytes([0]) + update(CONV_SAMPLING, 0, text("[]")) + update(MSG_STATS, 1, text("{\"a\":")),
    "extreme_times": bytes([0]) + update(CONV_CREATED, 0, integer(INT_MIN64)) +
    update(MSG_UPDATED, 1, bytes([5]) + bytes.fromhex("7ff8000000000001")) + bytes([COPY, 3]) + integer(0),
    "orphans": bytes([0]) + update(MSG_CONV, 3, integer(9)) + bytes([DELETE, 1, 0]),
}
# Damaged files (flags bit 2): runs of a 3-byte offset, a length byte, the bytes.
# Page 1 starts with the 100-byte header; the tables' pages follow.
def overwrite(at, data):
    return at.to_bytes(3, "big") + bytes([len(data) - 1]) + data


edits["damaged_header"] = bytes([4]) + overwrite(16, b"\x00\x01") + overwrite(56, b"\x00\x00\x00\x02")
edits["damaged_pages"] = bytes([4]) + overwrite(4096 + 8, b"\xff\xff") + overwrite(3 * 4096 + 100, b"\x0d\x00\x05") + \
    overwrite(5 * 4096 + 300, b"quokka!!")
# Found by the target: a tree holding another conversation's message.
edits["damaged_mixes_conversations"] = bytes([0x24]) + overwrite(0xFF0FE8, b"\x00\x00")
for name, data in edits.items():
    write(os.path.join(here, "corpus", "store_rows"), name, data)
