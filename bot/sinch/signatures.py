"""MessageMedia RSA webhook signatures ("Enterprise webhooks", ``API_SECURE_CALLBACKS``).

When signing is enabled on an account, the provider signs every webhook request with the
account's active signature key and adds five headers:

* ``X-MessageMedia-Signature``: base64 of the RSA PKCS#1 v1.5 signature,
* ``X-MessageMedia-Digest-Type``: the key's digest, ``SHA224``, ``SHA256`` or ``SHA512`` (the
  provider's documents also spell them ``SHA-224``, ``sha256``, ...; all are accepted),
* ``X-MessageMedia-Cipher-Type``: ``RSA``,
* ``X-MessageMedia-Key-Id``: the signature key's id,
* ``Date``: when the request was made (RFC 7231, ``Thu, 12 Dec 2019 10:16:19 GMT``).

The signed bytes are the HTTP request line, the ``Date`` value and the raw body, concatenated
without separators: ``b"POST /webhooks/messages?token=x HTTP/1.1" + date + body``.

:class:`SigningKey` is the provider's side (used by the sandbox); :func:`verify` is the
gateway's. A failed verification raises :class:`SignatureError`, whose ``reason`` is for the
log only: callers answer 401/403 without detail.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "CIPHER_HEADER",
    "DATE_HEADER",
    "DIGEST_HEADER",
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "SUPPORTED_DIGESTS",
    "SignatureError",
    "SigningKey",
    "load_public_key",
    "normalise_digest",
    "request_line",
    "signed_bytes",
    "verify",
]

SIGNATURE_HEADER: Final = "X-MessageMedia-Signature"
DIGEST_HEADER: Final = "X-MessageMedia-Digest-Type"
CIPHER_HEADER: Final = "X-MessageMedia-Cipher-Type"
KEY_ID_HEADER: Final = "X-MessageMedia-Key-Id"
DATE_HEADER: Final = "Date"

SUPPORTED_DIGESTS: Final = ("SHA224", "SHA256", "SHA512")
"""The digests the provider's signature keys can use, in their normalised spelling."""

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "SHA224": hashes.SHA224,
    "SHA256": hashes.SHA256,
    "SHA512": hashes.SHA512,
}
_KEY_SIZE: Final = 2048


class SignatureError(Exception):
    """A webhook request whose signature cannot be accepted.

    ``reason`` says why (missing header, unsupported cipher or digest, unparsable or stale
    ``Date``, key id mismatch, malformed or bad signature). Log it; never send it back.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise_digest(name: str) -> str:
    """``"SHA-224"``, ``"sha256"``, ``"SHA_512"`` → ``"SHA224"``, ``"SHA256"``, ``"SHA512"``.

    Raises :class:`ValueError` for anything that is not one of :data:`SUPPORTED_DIGESTS`.
    """
    normalised = name.strip().upper().replace("-", "").replace("_", "")
    if normalised not in _HASHES:
        raise ValueError(f"unsupported digest {name!r}; expected one of {SUPPORTED_DIGESTS}")
    return normalised


def request_line(method: str, path_qs: str) -> str:
    """The HTTP/1.1 request line that is signed, e.g. ``POST /webhooks/messages?x=1 HTTP/1.1``.

    ``path_qs`` is the path and query string exactly as sent on the wire (percent-encoded).
    """
    return f"{method.upper()} {path_qs} HTTP/1.1"


def signed_bytes(request_line: str, date: str, body: bytes) -> bytes:
    """The bytes the signature covers: request line + ``Date`` value + raw body, no separators.

    The request line and date are encoded as UTF-8 (both are ASCII on the wire).
    """
    return request_line.encode("utf-8") + date.encode("utf-8") + body


@dataclass(frozen=True)
class SigningKey:
    """An RSA signature key, as the provider holds it (the private half signs webhooks).

    Attributes:
        key_id: the id sent in ``X-MessageMedia-Key-Id`` (a UUID for generated keys).
        digest: ``"SHA224"``, ``"SHA256"`` or ``"SHA512"``.
        private_key: the RSA private key.
    """

    key_id: str
    digest: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", normalise_digest(self.digest))

    @classmethod
    def generate(cls, digest: str = "SHA256", key_id: str | None = None) -> SigningKey:
        """A new 2048-bit RSA key; ``key_id`` defaults to a random UUID."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
        return cls(key_id or str(uuid.uuid4()), digest, private_key)

    @classmethod
    def from_pem(cls, pem: str | bytes, *, digest: str, key_id: str) -> SigningKey:
        """Load an unencrypted PEM (PKCS#8 or PKCS#1) RSA private key.

        Raises :class:`ValueError` if it is not one.
        """
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            private_key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(key_id, digest, private_key)

    def private_key_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM (for persisting the sandbox's keys)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, for :func:`verify`."""
        return self.private_key.public_key()

    @property
    def public_key_b64(self) -> str:
        """Base64 of the DER SubjectPublicKeyInfo: the ``public_key`` the provider's API returns."""
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def sign(self, request_line: str, date: str, body: bytes) -> str:
        """The base64 signature of :func:`signed_bytes` with this key's digest."""
        signature = self.private_key.sign(
            signed_bytes(request_line, date, body), padding.PKCS1v15(), _HASHES[self.digest]()
        )
        return base64.b64encode(signature).decode("ascii")

    def headers(
        self, method: str, path_qs: str, body: bytes, date: str | None = None
    ) -> dict[str, str]:
        """All five signature headers for a request; ``date`` defaults to now (RFC 7231)."""
        if date is None:
            date = email.utils.formatdate(usegmt=True)
        return {
            DATE_HEADER: date,
            SIGNATURE_HEADER: self.sign(request_line(method, path_qs), date, body),
            DIGEST_HEADER: self.digest,
            CIPHER_HEADER: "RSA",
            KEY_ID_HEADER: self.key_id,
        }


def load_public_key(text: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from base64 DER SubjectPublicKeyInfo (the provider's format) or PEM.

    Whitespace and line breaks in the base64 are ignored. Raises :class:`ValueError` if the
    text is neither, or the key is not RSA.
    """
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            der = base64.b64decode(b"".join(data.split()), validate=True)
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a base64 DER or PEM public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    raise SignatureError(f"missing {name} header")


def verify(
    public_key: rsa.RSAPublicKey,
    *,
    method: str,
    path_qs: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    max_skew: float = 300.0,
    key_id: str | None = None,
) -> None:
    """Check a signed webhook request; raises :class:`SignatureError` if it is not acceptable.

    Args:
        public_key: the signature key's public half (see :func:`load_public_key`).
        method: the request's HTTP method.
        path_qs: the path and query string exactly as received (still percent-encoded).
        headers: the request headers; names are matched case-insensitively.
        body: the raw request body.
        now: the current Unix time (defaults to :func:`time.time`).
        max_skew: how far, in seconds, ``Date`` may be from ``now`` in either direction.
        key_id: if given, ``X-MessageMedia-Key-Id`` must equal it.

    Checks, in order: all five headers are present, the cipher is RSA, the digest is
    supported, the key id matches (if ``key_id`` is given), ``Date`` parses and is within
    ``max_skew`` of ``now``, and the signature verifies. Nothing but :class:`SignatureError`
    is raised, whatever the input.
    """
    signature_b64 = _header(headers, SIGNATURE_HEADER)
    digest_name = _header(headers, DIGEST_HEADER)
    cipher = _header(headers, CIPHER_HEADER)
    received_key_id = _header(headers, KEY_ID_HEADER)
    date = _header(headers, DATE_HEADER)

    if cipher.strip().upper() != "RSA":
        raise SignatureError(f"unsupported cipher {cipher!r}")
    try:
        digest = normalise_digest(digest_name)
    except ValueError:
        raise SignatureError(f"unsupported digest {digest_name!r}") from None
    if key_id is not None and received_key_id.strip() != key_id:
        raise SignatureError(f"unexpected key id {received_key_id!r}")

    try:
        parsed = email.utils.parsedate_to_datetime(date)
        if parsed.tzinfo is None:  # "-0000": UTC, with no claim about the local zone
            parsed = parsed.replace(tzinfo=datetime.UTC)
        sent_at = parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        raise SignatureError(f"unparsable Date {date!r}") from None
    current = time.time() if now is None else now
    if sent_at < current - max_skew:
        raise SignatureError(f"stale Date {date!r}")
    if sent_at > current + max_skew:
        raise SignatureError(f"Date {date!r} is in the future")

    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not valid base64") from None
    try:
        message = signed_bytes(request_line(method, path_qs), date, body)
        public_key.verify(signature, message, padding.PKCS1v15(), _HASHES[digest]())
    except (InvalidSignature, ValueError, TypeError):
        raise SignatureError("bad signature") from None
