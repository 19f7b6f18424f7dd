"""The server side of ``pods/exec`` as the API server speaks it: an HTTP/1.1 upgrade to a
WebSocket (RFC 6455) with the ``v4.channel.k8s.io`` subprotocol, where every binary message
starts with its channel (1 stdout, 2 stderr, 3 the final Status), then a close frame.

Just what an exec without stdin needs; the client is the kubernetes package's own
``kubernetes.stream`` (websocket-client), so the framing is checked by a real client."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any, BinaryIO

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "v4.channel.k8s.io"
STDOUT, STDERR, ERROR = 1, 2, 3


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def exit_status(code: int) -> dict[str, Any]:
    """The Status an exec ends with (what kubectl turns into its exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"[sh -c ...], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def serve_exec(
    wfile: BinaryIO, headers: dict[str, str], code: int, stdout: str, stderr: str
) -> None:
    """Upgrade, send the output and the exit status, close (the handler then drops the
    connection; a client closing its side first is fine)."""
    key = headers.get("sec-websocket-key", "")
    wfile.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        ).encode()
    )
    for channel, text in ((STDOUT, stdout), (STDERR, stderr)):
        if text:
            wfile.write(frame(0x2, bytes([channel]) + text.encode()))
    wfile.write(frame(0x2, bytes([ERROR]) + json.dumps(exit_status(code)).encode()))
    wfile.write(frame(0x8, struct.pack("!H", 1000)))
    wfile.flush()
