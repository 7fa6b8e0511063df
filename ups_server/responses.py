"""HTTP renderings of workitem replies and failures: status code, Warning headers, body.

Every refusal carries ``Warning: 299 <service>: <text>`` — the standard's text where
statuses.txt has one, else the server's own message naming the attribute — and a
text/plain body with every problem found.
"""

from __future__ import annotations

from starlette.responses import Response

from upsrs import status as st
from ups_server.workitems import Reply, UpsFailure

DICOM_JSON = "application/dicom+json"


def _warning_texts(transaction: str, code: str, detail: str) -> tuple[int, list[str]]:
    found = st.lookup(transaction, code)
    texts = [found.warning] if found.warning else []
    if detail and (not texts or found.http >= 400):
        texts.append(detail.replace("\r", " ").replace("\n", " "))
    return found.http, texts


MAX_WARNING_TEXT = 1000  # a quoted value can be huge; the text/plain body has it whole


def header_safe(text: str) -> str:
    """Header values are visible ASCII (RFC 9110 5.5): a rejected value quoted in a message
    may hold control or non-ASCII characters, so those are escaped (\\x08, \\u0417); the
    text/plain body keeps them as sent."""
    if not (text.isascii() and text.isprintable()):
        text = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)
    return text if len(text) <= MAX_WARNING_TEXT else text[:MAX_WARNING_TEXT - 3] + "..."


def _headers(service: str, texts: list[str]) -> list[tuple[bytes, bytes]]:
    """Warning headers as the reply's raw (name, value) pairs: appended to the list the
    reply already has, as ``MutableHeaders.append`` would, without building a headers view
    per header (every reply names its Location or a Warning)."""
    return [(b"warning", header_safe(st.warning_header(service, t)).encode("latin-1")) for t in texts if t]


def failure(service: str, exc: UpsFailure) -> Response:
    http, texts = _warning_texts(exc.transaction, exc.status, exc.detail)
    detail = exc.detail or (texts[0] if texts else "")
    body = "\n".join(str(p) for p in exc.problems) if exc.problems else detail
    resp = Response(body.encode() + b"\n" if body else b"", status_code=http, media_type="text/plain; charset=utf-8")
    resp.raw_headers += _headers(service, texts[:1] + [t for t in texts[1:] if t != texts[0]])
    return resp


def reply(service: str, rep: Reply, location: str | None = None) -> Response:
    found = st.lookup(rep.transaction, rep.status)
    texts = [found.warning] if found.warning else []
    for w in rep.warnings:
        name, _, arg = w.partition(":")
        text = st.lookup("search", name).warning
        texts.append(text.format(remaining=arg) if arg else text)
    http = found.http
    if rep.transaction == "search" and rep.body is None:
        http = 204
    resp = Response(rep.body if rep.body is not None else b"", status_code=http,
                    media_type=DICOM_JSON if rep.body is not None else None)
    if location:
        value = location.encode("latin-1")
        resp.raw_headers += ((b"location", value), (b"content-location", value))
    if texts:
        resp.raw_headers += _headers(service, texts)
    return resp
