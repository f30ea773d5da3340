"""The daemon's message format: a frame is a 4-byte length and that many bytes; a frame
holds a list of byte strings, each a 4-byte length and its bytes.

No pickle, no marshal, no JSON: the decoder only slices bytes, checks every length against
what is left, and caps the frame size, so a malformed message is an error and nothing more.
Imported on every CLI invocation: built-ins only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on this path
if TYPE_CHECKING:
    import _socket

__all__ = ["MAX_FRAME", "WireError", "decode", "encode", "recv_frame", "send_frame"]

MAX_FRAME = 8 << 20  # the environment and argv of one invocation fit easily (ARG_MAX is 2 MiB)
_MAX_FIELDS = 1 << 16


class WireError(Exception):
    """A frame was malformed, too large, or the peer went away mid-frame."""


def encode(fields: list[bytes]) -> bytes:
    parts = []
    for field in fields:
        parts.append(len(field).to_bytes(4, "big"))
        parts.append(field)
    body = b"".join(parts)
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return len(body).to_bytes(4, "big") + body


def decode(body: bytes) -> list[bytes]:
    fields: list[bytes] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 4 or len(fields) >= _MAX_FIELDS:
            raise WireError("malformed message")
        size = int.from_bytes(body[pos : pos + 4], "big")
        pos += 4
        if size > end - pos:
            raise WireError("malformed message: a field runs past the end")
        fields.append(body[pos : pos + size])
        pos += size
    return fields


def send_frame(sock: _socket.socket, fields: list[bytes]) -> None:
    sock.sendall(encode(fields))


def recv_exact(sock: _socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise WireError("the peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def frame_size(head: bytes) -> int:
    if len(head) != 4:
        raise WireError("the peer closed the connection")
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise WireError(f"message of {size} bytes is over the {MAX_FRAME}-byte limit")
    return size


def recv_frame(sock: _socket.socket) -> list[bytes]:
    """The next frame's fields; WireError on EOF, truncation or a bad frame."""
    return decode(recv_exact(sock, frame_size(recv_exact(sock, 4))))
