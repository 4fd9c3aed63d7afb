#!/usr/bin/env python3
"""Writes seed inputs for every fuzz target from the repository's own test vectors and
examples: `seeds.py OUT_DIR` makes OUT_DIR/<target>/<name> files. Run by scripts/fuzz.sh;
nothing here is committed output."""

import io
import json
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1]


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def frame(body):
    return len(body).to_bytes(4, "big") + body


# tunnel: every vector body (valid and invalid), alone and framed, and all of them as one
# stream of frames.
tv = json.loads(read("tunnel/vectors/tunnel-vectors.json"))
stream = b""
for i, v in enumerate(tv["vectors"] + tv["invalid"]):
    body = bytes.fromhex(v["hex"])
    put("tunnel_frames", f"v{i}", body)
    put("tunnel_frames", f"f{i}", frame(body))
    stream += frame(body)
put("tunnel_frames", "stream", stream)

# mux: every frame vector (valid and malformed) alone, and the valid ones as one stream
# that opens, sends, credits and closes.
mv = json.loads(read("tunnel/vectors/mux-vectors.json"))
mux_stream = b""
for i, v in enumerate(mv["valid"] + mv["invalid"]):
    put("mux_frames", f"v{i}", bytes.fromhex(v["hex"]))
for v in mv["valid"]:
    mux_stream += bytes.fromhex(v["hex"])
put("mux_frames", "stream", mux_stream)

# e2e: the vector's sealed request (mode 0), its response frames (mode 1), and scripts
# (mode 2) that seal, deliver, alter, reorder and send control messages.
ev = json.loads(read("crypto/vectors/e2e-vectors.json"))
put("e2e_stream", "request", b"\x00" + bytes.fromhex(ev["sealed_request"]))
frames = b""
for c in ev["chunks"]:
    sealed = bytes.fromhex(c["sealed"])
    frames += len(sealed).to_bytes(2, "big") + sealed
put("e2e_stream", "frames", b"\x01" + frames)
put("e2e_stream", "plain", b"\x01\x00\x04\x00\x01\x00\x04")
put("e2e_stream", "script", b"\x02" + bytes([0, 3]) + b"abc" + bytes([2, 40, 1, 1, 0, 2]) + b"de"
    + bytes([4, 3, 9, 1, 1, 6, 3]) + b"\x07\x00\x08" + bytes([2, 0x10, 0x85, 0, 1, 5, 4, 0, 0, 0, 0]))
put("e2e_stream", "controls", b"\x02\x06\x03\x07\x00\x08\x00\x00\x06\x01x\x05\x01")

# bundles: the JavaScript examples, zipped as `aisapp pack` would; and their JSON files.
for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
    d = os.path.join(ROOT, "examples", name)
    if not os.path.exists(os.path.join(d, "manifest.json")):
        continue
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            if os.path.isfile(p) and f.endswith((".json", ".js")):
                z.write(p, f)
    put("bundle_zip", name, buf.getvalue())
    for f in ("manifest.json", "permissions.json"):
        if os.path.exists(os.path.join(d, f)):
            put("manifest", f"{name}-{f}", read(f"examples/{name}/{f}"))
put("manifest", "permissions-all", b'{"ai": true, "clipboard": true, "network": ["api.example.com", "*.example.org:8443"],'
    b' "filesystem": {"read": ["$DOCUMENTS/notes"], "write": ["$APP_DATA"]}}')
put("manifest", "id", b"hello-ai")


# wasm: small hand-made modules (valid, with host imports, foreign imports, a component).
def sec(n, body):
    return bytes([n, len(body)]) + body


def name(s):
    return bytes([len(s)]) + s.encode()


def module(imports, exports=(("memory", 2, 0), ("aisapp_alloc", 0, None), ("aisapp_run", 0, None))):
    funcs = 2
    imp = bytes([len(imports)]) + b"".join(name(m) + name(n) + b"\x00\x00" for m, n in imports)
    exp = []
    for i, (n, kind, idx) in enumerate(exports):
        if idx is None:
            idx = len(imports) + (i - 1)
        exp.append(name(n) + bytes([kind, idx]))
    return (b"\x00asm\x01\x00\x00\x00" + sec(1, b"\x01\x60\x00\x00") + sec(2, imp)
            + sec(3, bytes([funcs, 0, 0])) + sec(5, b"\x01\x00\x01")
            + sec(7, bytes([len(exp)]) + b"".join(exp)) + sec(10, b"\x02\x02\x00\x0b\x02\x00\x0b"))


put("wasm_check", "host", module([("aisapp_v1", "emit"), ("aisapp_v1", "ai_generate"), ("aisapp_v1", "fs"),
                                   ("aisapp_v1", "http"), ("aisapp_v1", "clipboard")]))
put("wasm_check", "wasi", module([("wasi_snapshot_preview1", "fd_write")]))
put("wasm_check", "unknown", module([("aisapp_v1", "nope")]))
put("wasm_check", "no-exports", module([], exports=()))
put("wasm_check", "component", b"\x00asm\x0d\x00\x01\x00")

# provider answers: first byte = provider (0 OpenAI, 1 Anthropic, 2 Gemini) + 3 x piece size.
openai = (b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
          b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
          b'data: {"choices":[{"delta":{"content":"lo \xc3\xa9"}}]}\n\n'
          b'data: {"error":{"message":"bad","type":"x"}}\n\n'
          b": keep-alive\n\ndata: [DONE]\n\n")
anthropic = (b'event: message_start\ndata: {"type":"message_start"}\n\n'
             b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\r\n\r\n'
             b'event: ping\ndata: {"type": "ping"}\n\n'
             b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
             b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
gemini = (b'data: {"candidates": [{"content": {"parts": [{"text": "Hel"}, {"text": "lo"}],"role": "model"},"index": 0}]}\n\n'
          b'data: {"promptFeedback": {"blockReason": "SAFETY"}}\n\n'
          b'data: {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}\n\n')
for i, body in enumerate((openai, anthropic, gemini)):
    put("provider_sse", f"p{i}", bytes([i]) + body)
    put("provider_sse", f"p{i}-pieces", bytes([i + 3 * 7]) + body)
