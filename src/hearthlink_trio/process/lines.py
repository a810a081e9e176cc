"""Lines out of a byte stream, none longer than a cap, whatever a process writes."""

from __future__ import annotations

#: A longer line is cut into pieces of this size.
MAX_LINE_BYTES = 64 * 1024


class LineSplitter:
    """Turns a byte stream into lines, none longer than ``max_line`` bytes."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        lines: list[bytes] = []
        start = 0
        buf = self._buf
        while True:
            end = buf.find(b"\n", start, start + self._max + 1)
            if end < 0:
                if len(buf) - start > self._max:
                    lines.append(bytes(buf[start : start + self._max]))
                    start += self._max
                    continue
                break
            lines.append(bytes(buf[start:end]).removesuffix(b"\r"))
            start = end + 1
        del buf[:start]
        return lines

    def flush(self) -> list[bytes]:
        """The unterminated tail, at end of stream."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [rest.removesuffix(b"\r")] if rest else []
