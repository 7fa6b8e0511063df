"""multipart/related (RFC 2387 over RFC 2046) for STOW-RS request bodies: media-type
parameters, and a push parser that never holds more than one chunk of a part in memory.

Hand-written on purpose. A study is hundreds of MB, so a part must go to disk as it
arrives; the standard library's ``email`` parser wants the whole message, and the one
streaming parser in Starlette's orbit (python-multipart) is not a dependency of this
project and is built around multipart/form-data. What is needed is small: find the
delimiter ``CRLF--boundary`` in a stream, split each part's header block from its body.

The parser is sans-IO: :meth:`MultipartParser.feed` takes bytes and returns events, so the
route decides where the bytes go and the parser is tested without HTTP.

Tolerated, because real clients send them: a first delimiter with no CRLF before it
(RFC 2046 allows it), a preamble and an epilogue (ignored), transport padding after a
delimiter, header blocks ended by bare LF, a part with no headers at all. Refused with
:class:`MultipartError`: a body that ends before the close delimiter, a delimiter followed
by anything but padding and a line end, a header block larger than ``max_header_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
MAX_PADDING = 256  # spaces after a delimiter before we call it data


class MultipartError(ValueError):
    """The body is not a well-formed multipart message (answered with 400)."""


@dataclass(frozen=True)
class MediaType:
    """``type/subtype`` in lower case and its parameters (names lower case, values
    unquoted)."""

    type: str
    params: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


def _split_params(value: str, sep: str = ";") -> list[str]:
    """Split at ``sep`` outside quoted strings: a quoted boundary may hold a ``;``."""
    out, cur, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out, i = [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    return value


def parse_media_type(value: str) -> MediaType:
    """``multipart/related; type="application/dicom"; boundary=abc`` → its parts. A
    parameter without ``=`` is ignored (it carries nothing we could use)."""
    head, *rest = _split_params(value or "")
    params: dict[str, str] = {}
    for item in rest:
        name, eq, val = item.partition("=")
        if eq and name.strip():
            params[name.strip().lower()] = _unquote(val)
    return MediaType(head.strip().lower(), params)


def parse_accept(value: str) -> list[MediaType]:
    """An Accept header as its media ranges, in the order sent (q=0 ranges dropped: they
    say "not this")."""
    ranges = [parse_media_type(item) for item in _split_params(value or "", ",") if item.strip()]
    return [r for r in ranges if r.param("q") not in ("0", "0.0", "0.00", "0.000")]


@dataclass(frozen=True)
class PartStart:
    """A part begins; ``headers`` has lower-case names (the last of a repeated one)."""

    headers: dict[str, str]

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


@dataclass(frozen=True)
class PartData:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd

_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)


class MultipartParser:
    """Push parser: ``feed(chunk)`` → events, then ``close()`` (raises on a truncated
    body). Memory is the current chunk plus a delimiter's length."""

    def __init__(self, boundary: str, *, max_header_bytes: int = MAX_HEADER_BYTES):
        if not boundary or len(boundary) > 200:
            raise MultipartError("the boundary parameter must have 1 to 200 characters")
        try:
            b = boundary.encode("ascii")
        except UnicodeEncodeError:
            raise MultipartError("the boundary parameter must be ASCII") from None
        self._delimiter = b"\r\n--" + b
        self._max_header_bytes = max_header_bytes
        # a CRLF in front lets the first delimiter match with or without one before it
        self._buf = bytearray(b"\r\n")
        self._state = _PREAMBLE
        self._pending = 0
        self.parts = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state == _DONE:
            return []  # the epilogue: ignored
        self._buf += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if self._state == _DONE:
            return
        if self._state == _PREAMBLE:
            raise MultipartError("no delimiter line for the boundary was found in the body")
        raise MultipartError("the body ended before the close delimiter (--boundary--): it is truncated")

    def _step(self, events: list[Event]) -> bool:
        """Advance one state if the buffer allows; False when more input is needed."""
        buf, delim = self._buf, self._delimiter
        if self._state in (_PREAMBLE, _BODY):
            i = self._find_delimiter()
            if i is None or i < 0:
                # keep what may still become a delimiter line; the rest is data (or preamble)
                safe = self._pending if i is None else len(buf) - (len(delim) - 1)
                if safe > 0:
                    if self._state == _BODY:
                        events.append(PartData(bytes(buf[:safe])))
                    del buf[:safe]
                return False
            if self._state == _BODY:
                if i:
                    events.append(PartData(bytes(buf[:i])))
                events.append(PartEnd())
            del buf[:i + len(delim)]
            self._state = _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == _HEADERS:
            return self._headers(events)
        return False

    def _find_delimiter(self) -> int | None:
        """Index of the first real delimiter line; -1 if there is none in the buffer;
        None if one may start at ``self._pending`` but its line end has not arrived yet.

        ``CRLF--boundary`` followed by other text is data, not a delimiter: generators
        should not let that happen, but a parser that splits there would cut a part."""
        buf, delim, at = self._buf, self._delimiter, 0
        while True:
            i = buf.find(delim, at)
            if i < 0:
                return -1
            verdict = _delimiter_line(buf, i + len(delim))
            if verdict is None:
                self._pending = i
                return None
            if verdict:
                return i
            at = i + 1

    def _after_delimiter(self) -> bool:
        buf = self._buf
        if buf[:2] == b"--":  # close delimiter
            self._state = _DONE
            buf.clear()
            return False
        j = 0
        while buf[j:j + 1] in (b" ", b"\t"):  # transport padding
            j += 1
        del buf[:j + (2 if buf[j:j + 1] == b"\r" else 1)]
        self._state = _HEADERS
        return True

    def _headers(self, events: list[Event]) -> bool:
        buf = self._buf
        if buf[:2] == b"\r\n" or buf[:1] == b"\n":  # no header lines at all
            del buf[:2 if buf[:1] == b"\r" else 1]
            return self._start({}, events)
        if len(buf) < 2:
            return False
        ends = [(i, n) for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
        if not ends:
            if len(buf) > self._max_header_bytes:
                raise MultipartError(f"a part's header block exceeds {self._max_header_bytes} bytes")
            return False
        i, n = min(ends)
        if i > self._max_header_bytes:
            raise MultipartError(f"a part's header block exceeds {self._max_header_bytes} bytes")
        block = bytes(buf[:i])
        del buf[:i + n]
        return self._start(_parse_header_block(block), events)

    def _start(self, headers: dict[str, str], events: list[Event]) -> bool:
        self.parts += 1
        events.append(PartStart(headers))
        self._state = _BODY
        return True


def _delimiter_line(buf: bytearray, j: int) -> bool | None:
    """After ``CRLF--boundary`` (ending at ``j``): a delimiter if ``--`` (close) or
    transport padding and a line end follow; None while the buffer ends too early to say."""
    if buf[j:j + 2] == b"--":
        return True
    if buf[j:] == b"-":
        return None
    k = j
    while buf[k:k + 1] in (b" ", b"\t"):
        k += 1
        if k - j > MAX_PADDING:
            return False
    rest = buf[k:k + 2]
    if rest in (b"", b"\r"):
        return None
    return rest == b"\r\n" or rest[:1] == b"\n"


def _parse_header_block(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in block.replace(b"\r\n", b"\n").split(b"\n"):
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and last:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name != name.strip():
            raise MultipartError(f"a part header line is not 'Name: value': {line[:80]!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers
