"""What the decoy imitates: Debian 12's stock nginx 1.22.1 — its defaults, limits, reason
phrases and built-in error pages (web/decoy.py serves them)."""

from __future__ import annotations

SERVER = "nginx/1.22.1"
CLIENT_HEADER_TIMEOUT = 60.0  # nginx default, seconds
KEEPALIVE_TIMEOUT = 75.0  # nginx default (Debian's nginx.conf does not set it)
LINGERING_TIME = 30.0  # nginx defaults for lingering close and body discarding
LINGERING_TIMEOUT = 5.0
KEEPALIVE_REQUESTS = 1000
CLIENT_MAX_BODY_SIZE = 1 << 20
HEADER_BUFFER = 1024  # client_header_buffer_size
LARGE_HEADER_BUFFER = 8192  # large_client_header_buffers 4 8k
LARGE_HEADER_BUFFERS = 4
GZIP_MIN_LENGTH = 20
GZIP_TYPES = frozenset({"text/html"})
# Built at package build time: files shipped in the package carry this date (plus a per-file
# offset of up to two months, so they do not all share one second), not their install time.
SITE_MTIME = 1710410400  # 2024-03-14 10:00:00 UTC
MIME_TYPES = {  # the part of Debian's /etc/nginx/mime.types a small site uses
    "html": "text/html",
    "htm": "text/html",
    "css": "text/css",
    "xml": "text/xml",
    "gif": "image/gif",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "js": "application/javascript",
    "txt": "text/plain",
    "png": "image/png",
    "svg": "image/svg+xml",
    "webp": "image/webp",
    "ico": "image/x-icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "json": "application/json",
    "pdf": "application/pdf",
}
DEFAULT_TYPE = "application/octet-stream"

REASONS = {
    200: "OK",
    206: "Partial Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Not Allowed",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    494: "Bad Request",  # nginx's internal "Request Header Or Cookie Too Large"
    497: "Bad Request",  # nginx's internal "The plain HTTP request was sent to HTTPS port"
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_TAIL = f"<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n".encode()
MSIE_PADDING = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6


# nginx's internal codes that go out as a 400 with a page of their own
AS_400 = {
    494: b"Request Header Or Cookie Too Large",
    497: b"The plain HTTP request was sent to HTTPS port",
}


def error_body(status: int) -> bytes:
    if status in AS_400:
        says = AS_400[status]
        head = (
            b"<html>\r\n<head><title>400 " + says + b"</title></head>\r\n"
            b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
            b"<center>" + says + b"</center>\r\n"
        )
    else:
        title = f"{status} {REASONS[status]}".encode()
        head = (
            b"<html>\r\n<head><title>" + title + b"</title></head>\r\n<body>\r\n"
            b"<center><h1>" + title + b"</h1></center>\r\n"
        )
    return head + _TAIL
