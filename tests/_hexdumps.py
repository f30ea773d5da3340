"""What ``xxd``, ``hexdump -C`` and ``od -A x -t x1z`` print, written in Python: for the
redaction tests, and for a task to print on a machine without the tools (this file's text
is then part of the task's script, so it imports nothing)."""


def dump(data: bytes, kind: str) -> bytes:
    """``data`` dumped as ``kind`` ("xxd", "hexdump -C" or "od") prints it, 16 bytes a row."""
    rows = []
    for at in range(0, len(data), 16):
        row = data[at : at + 16]
        text = bytes(c if 0x20 <= c < 0x7F else 0x2E for c in row)
        pairs = [f"{c:02x}" for c in row]
        if kind == "xxd":
            groups = " ".join("".join(pairs[i : i + 2]) for i in range(0, len(pairs), 2))
            rows.append(f"{at:08x}: {groups:<40}  ".encode() + text)
        elif kind == "hexdump -C":
            hexes = " ".join(pairs[:8]) + "  " + " ".join(pairs[8:])
            rows.append(f"{at:08x}  {hexes:<48}  |".encode() + text + b"|")
        else:
            rows.append(f"{at:06x} {' '.join(pairs):<47}  >".encode() + text + b"<")
    return b"\n".join(rows) + b"\n"
