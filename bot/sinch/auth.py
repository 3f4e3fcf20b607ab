"""The provider's request authentication, for both sides of the wire.

MessageMedia / Sinch Engage accept HTTP Basic (``api_key:api_secret``) or an HMAC signature:

``Authorization: hmac username="KEY", algorithm="hmac-sha256", headers="Date Content-MD5 request-line", signature="SIG"``

where the signing string is the listed headers as ``Name: value`` lines followed by the request
line (``POST /v1/messages HTTP/1.1``), and the signature is base64(HMAC(secret, string)). The
public documentation describes ``hmac-sha256`` with ``Content-MD5``; the official SDK sends
``hmac-sha1`` with ``x-Content-MD5``. :class:`HmacAuth` produces either; :func:`verify` (used
by the sandbox) accepts Basic and both HMAC variants.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Generator, Mapping
from email.utils import formatdate
from typing import Literal

import httpx

HmacAlgorithm = Literal["sha256", "sha1"]

_DIGESTS: dict[str, Callable[[], hashlib._Hash]] = {
    "hmac-sha256": hashlib.sha256,
    "hmac-sha1": hashlib.sha1,
}
_MD5_HEADER: dict[HmacAlgorithm, str] = {"sha256": "Content-MD5", "sha1": "x-Content-MD5"}


def content_md5(body: bytes) -> str:
    """Hex MD5 of the request body, as the provider expects in ``Content-MD5``."""
    return hashlib.md5(body).hexdigest()


def signing_string(header_names: list[str], headers: Mapping[str, str], request_line: str) -> str:
    """The string the HMAC covers: each listed header as ``Name: value``, ``request-line``
    as the request line itself, joined by newlines."""
    lower = {k.lower(): v for k, v in headers.items()}
    lines = []
    for name in header_names:
        if name.lower() == "request-line":
            lines.append(request_line)
        else:
            lines.append(f"{name}: {lower.get(name.lower(), '')}")
    return "\n".join(lines)


def hmac_signature(secret: str, string: str, algorithm: HmacAlgorithm) -> str:
    """base64(HMAC(secret, string)) with SHA-256 or SHA-1."""
    digest = hashlib.sha256 if algorithm == "sha256" else hashlib.sha1
    mac = hmac.new(secret.encode(), string.encode(), digest).digest()
    return base64.b64encode(mac).decode()


def hmac_headers(
    api_key: str,
    api_secret: str,
    *,
    method: str,
    path_qs: str,
    body: bytes,
    algorithm: HmacAlgorithm = "sha256",
    date: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate one request with HMAC: ``Date``, the MD5 header when
    there is a body, and ``Authorization``."""
    date = date or formatdate(usegmt=True)
    headers = {"Date": date}
    names = ["Date"]
    if body:
        md5_name = _MD5_HEADER[algorithm]
        headers[md5_name] = content_md5(body)
        names.append(md5_name)
    names.append("request-line")
    request_line = f"{method.upper()} {path_qs} HTTP/1.1"
    signature = hmac_signature(api_secret, signing_string(names, headers, request_line), algorithm)
    headers["Authorization"] = (
        f'hmac username="{api_key}", algorithm="hmac-{algorithm}", '
        f'headers="{" ".join(names)}", signature="{signature}"'
    )
    return headers


def basic_header(api_key: str, api_secret: str) -> str:
    """``Authorization`` value for HTTP Basic."""
    token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode()
    return f"Basic {token}"


class HmacAuth(httpx.Auth):
    """httpx authentication that signs every request with the provider's HMAC scheme."""

    requires_request_body = True

    def __init__(self, api_key: str, api_secret: str, algorithm: HmacAlgorithm = "sha256"):
        self._key = api_key
        self._secret = api_secret
        self._algorithm: HmacAlgorithm = algorithm

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path_qs = request.url.raw_path.decode("ascii")
        request.headers.update(
            hmac_headers(
                self._key,
                self._secret,
                method=request.method,
                path_qs=path_qs,
                body=request.content,
                algorithm=self._algorithm,
            )
        )
        yield request


def _raw(text: str) -> bytes:
    """Text as the bytes it was received as (aiohttp decodes headers as UTF-8 with
    ``surrogateescape``), so any header value can be hashed and compared."""
    return text.encode("utf-8", "surrogateescape")


_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def verify(
    headers: Mapping[str, str],
    *,
    method: str,
    path_qs: str,
    body: bytes,
    credentials: Mapping[str, str],
) -> str | None:
    """Check a request's credentials against ``credentials`` (api key → secret).

    Returns the API key that signed the request, or ``None`` when the request carries no
    valid Basic or HMAC credentials. Never raises for malformed input.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    authorization = lower.get("authorization", "").strip()
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError, a str that is not ASCII
            return None
        basic_key, sep, basic_secret = decoded.partition(":")
        expected = credentials.get(basic_key)
        if sep and expected is not None and hmac.compare_digest(_raw(basic_secret), _raw(expected)):
            return basic_key
        return None
    if scheme.lower() != "hmac":
        return None
    params: dict[str, str] = dict(_PARAM.findall(rest))
    key = params.get("username", "")
    algorithm = params.get("algorithm", "").lower()
    secret = credentials.get(key)
    if secret is None or algorithm not in _DIGESTS or "signature" not in params:
        return None
    names = params.get("headers", "").split()
    if "request-line" not in [n.lower() for n in names] or "date" not in [n.lower() for n in names]:
        return None
    for name in names:
        if name.lower().endswith("content-md5") and lower.get(name.lower()) != content_md5(body):
            return None
    request_line = f"{method.upper()} {path_qs} HTTP/1.1"
    # Signers differ on how they spell "Date" in the signing string; accept either.
    spellings = {tuple(names), tuple("Date" if n.lower() == "date" else n for n in names)}
    for spelling in spellings:
        string = signing_string(list(spelling), lower, request_line)
        mac = hmac.new(_raw(secret), _raw(string), _DIGESTS[algorithm]).digest()
        if hmac.compare_digest(base64.b64encode(mac), _raw(params["signature"])):
            return key
    return None
