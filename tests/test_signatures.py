"""Tests for bot.sinch.signatures: MessageMedia RSA webhook signatures."""

from __future__ import annotations

import base64
import email.utils
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from bot.sinch.signatures import (
    CIPHER_HEADER,
    DATE_HEADER,
    DIGEST_HEADER,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    SigningKey,
    load_public_key,
    normalise_digest,
    request_line,
    signed_bytes,
    verify,
)

NOW = 1576145779.0  # Thu, 12 Dec 2019 10:16:19 GMT
DATE = "Thu, 12 Dec 2019 10:16:19 GMT"
PATH = "/webhooks/messages?token=abc%20def"
BODY = b'{"reply_id":"a175e797","content":"Yes please \xf0\x9f\x98\x80"}'


@pytest.fixture(scope="module", params=["SHA224", "SHA256", "SHA512"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey.generate(request.param)


@pytest.fixture(scope="module")
def sha256_key() -> SigningKey:
    return SigningKey.generate("SHA256", key_id="6a1b0d5c-2b4f-4f0e-9a52-4d1f3b8c2e11")


def _headers(key: SigningKey, **overrides: str) -> dict[str, str]:
    headers = key.headers("POST", PATH, BODY, date=DATE)
    headers.update(overrides)
    return headers


def _verify(
    key: SigningKey,
    headers: dict[str, str],
    *,
    method: str = "POST",
    path_qs: str = PATH,
    body: bytes = BODY,
    now: float = NOW,
    max_skew: float = 300.0,
    key_id: str | None = None,
) -> None:
    verify(
        key.public_key,
        method=method,
        path_qs=path_qs,
        headers=headers,
        body=body,
        now=now,
        max_skew=max_skew,
        key_id=key_id,
    )


def _reason(excinfo: pytest.ExceptionInfo[SignatureError]) -> str:
    return excinfo.value.reason


# ------------------------------------------------------------------ building blocks


def test_signed_bytes_concatenates_without_separators() -> None:
    line = "POST /webhooks/messages?token=x HTTP/1.1"
    assert signed_bytes(line, DATE, b"{}") == (
        b"POST /webhooks/messages?token=x HTTP/1.1Thu, 12 Dec 2019 10:16:19 GMT{}"
    )


def test_request_line() -> None:
    assert request_line("post", "/hook?a=1") == "POST /hook?a=1 HTTP/1.1"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("SHA224", "SHA224"),
        ("SHA-224", "SHA224"),
        ("sha256", "SHA256"),
        ("Sha-256", "SHA256"),
        ("SHA-512", "SHA512"),
        (" sha_512 ", "SHA512"),
    ],
)
def test_normalise_digest(spelling: str, expected: str) -> None:
    assert normalise_digest(spelling) == expected


@pytest.mark.parametrize("spelling", ["SHA1", "MD5", "SHA384", "", "SHA-3-256"])
def test_normalise_digest_rejects_others(spelling: str) -> None:
    with pytest.raises(ValueError, match="unsupported digest"):
        normalise_digest(spelling)


def test_generate_defaults() -> None:
    key = SigningKey.generate()
    assert key.digest == "SHA256"
    assert len(key.key_id) == 36  # a UUID
    assert key.private_key.key_size == 2048
    assert "private_key" not in repr(key)


def test_signing_key_normalises_digest() -> None:
    key = SigningKey.generate("sha-512", key_id="k1")
    assert key.digest == "SHA512"
    assert key.key_id == "k1"
    with pytest.raises(ValueError, match="unsupported digest"):
        SigningKey("k2", "SHA1", key.private_key)


def test_headers_has_all_five(sha256_key: SigningKey) -> None:
    headers = sha256_key.headers("POST", PATH, BODY, date=DATE)
    assert set(headers) == {
        SIGNATURE_HEADER,
        DIGEST_HEADER,
        CIPHER_HEADER,
        KEY_ID_HEADER,
        DATE_HEADER,
    }
    assert headers[DIGEST_HEADER] == "SHA256"
    assert headers[CIPHER_HEADER] == "RSA"
    assert headers[KEY_ID_HEADER] == sha256_key.key_id
    assert headers[DATE_HEADER] == DATE
    assert headers[SIGNATURE_HEADER] == sha256_key.sign(f"POST {PATH} HTTP/1.1", DATE, BODY)


def test_headers_date_defaults_to_now(sha256_key: SigningKey) -> None:
    headers = sha256_key.headers("POST", PATH, BODY)
    assert headers[DATE_HEADER].endswith(" GMT")
    parsed = email.utils.parsedate_to_datetime(headers[DATE_HEADER])
    assert parsed.tzinfo is not None
    # Verifies against the real clock.
    verify(sha256_key.public_key, method="POST", path_qs=PATH, headers=headers, body=BODY)


def test_signature_is_pkcs1v15_over_signed_bytes(key: SigningKey) -> None:
    """Independent check with cryptography directly, as a PHP/openssl verifier would."""
    signature = base64.b64decode(key.sign(f"POST {PATH} HTTP/1.1", DATE, BODY))
    algorithm: dict[str, type[hashes.HashAlgorithm]] = {
        "SHA224": hashes.SHA224,
        "SHA256": hashes.SHA256,
        "SHA512": hashes.SHA512,
    }
    key.public_key.verify(
        signature,
        f"POST {PATH} HTTP/1.1".encode() + DATE.encode() + BODY,
        padding.PKCS1v15(),
        algorithm[key.digest](),
    )


# ------------------------------------------------------------------ round trips


def test_round_trip(key: SigningKey) -> None:
    _verify(key, _headers(key))


def test_round_trip_with_expected_key_id(sha256_key: SigningKey) -> None:
    _verify(sha256_key, _headers(sha256_key), key_id=sha256_key.key_id)


def test_wrong_key_id(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError) as excinfo:
        _verify(sha256_key, _headers(sha256_key), key_id="someone-else")
    assert "key id" in _reason(excinfo)


@pytest.mark.parametrize("spelling", ["SHA-256", "sha256", "Sha_256"])
def test_digest_header_spellings(sha256_key: SigningKey, spelling: str) -> None:
    _verify(sha256_key, _headers(sha256_key, **{DIGEST_HEADER: spelling}))


def test_cipher_header_case(sha256_key: SigningKey) -> None:
    _verify(sha256_key, _headers(sha256_key, **{CIPHER_HEADER: "rsa"}))


@pytest.mark.parametrize("transform", [str.lower, str.upper, str.title])
def test_header_names_are_case_insensitive(
    sha256_key: SigningKey, transform: Callable[[str], str]
) -> None:
    headers = {transform(name): value for name, value in _headers(sha256_key).items()}
    _verify(sha256_key, headers)


def test_empty_body(sha256_key: SigningKey) -> None:
    headers = sha256_key.headers("GET", "/hook", b"", date=DATE)
    verify(
        sha256_key.public_key,
        method="GET",
        path_qs="/hook",
        headers=headers,
        body=b"",
        now=NOW,
    )


# ------------------------------------------------------------------ tampering


def test_tampered_body(key: SigningKey) -> None:
    with pytest.raises(SignatureError) as excinfo:
        _verify(key, _headers(key), body=BODY + b" ")
    assert _reason(excinfo) == "bad signature"


@pytest.mark.parametrize(
    "path", ["/webhooks/messages?token=abc%20deg", "/webhooks/messages", "/other?token=abc%20def"]
)
def test_tampered_path(sha256_key: SigningKey, path: str) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        _verify(sha256_key, _headers(sha256_key), path_qs=path)


def test_tampered_method(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        _verify(sha256_key, _headers(sha256_key), method="PUT")


def test_tampered_date(sha256_key: SigningKey) -> None:
    headers = _headers(sha256_key, **{DATE_HEADER: "Thu, 12 Dec 2019 10:16:20 GMT"})
    with pytest.raises(SignatureError, match="bad signature"):
        _verify(sha256_key, headers)


def test_wrong_digest_header(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        _verify(sha256_key, _headers(sha256_key, **{DIGEST_HEADER: "SHA512"}))


def test_other_key(sha256_key: SigningKey) -> None:
    other = SigningKey.generate("SHA256")
    with pytest.raises(SignatureError, match="bad signature"):
        verify(
            other.public_key,
            method="POST",
            path_qs=PATH,
            headers=_headers(sha256_key),
            body=BODY,
            now=NOW,
        )


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize("offset", [-300.0, 0.0, 300.0])
def test_date_within_skew(sha256_key: SigningKey, offset: float) -> None:
    _verify(sha256_key, _headers(sha256_key), now=NOW - offset)


def test_stale_date(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError) as excinfo:
        _verify(sha256_key, _headers(sha256_key), now=NOW + 301)
    assert _reason(excinfo).startswith("stale Date")


def test_future_date(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError) as excinfo:
        _verify(sha256_key, _headers(sha256_key), now=NOW - 301)
    assert "future" in _reason(excinfo)


def test_custom_skew(sha256_key: SigningKey) -> None:
    _verify(sha256_key, _headers(sha256_key), now=NOW + 3000, max_skew=3600.0)
    with pytest.raises(SignatureError, match="stale"):
        _verify(sha256_key, _headers(sha256_key), now=NOW + 11, max_skew=10.0)


def test_minus_zero_zone_is_utc(sha256_key: SigningKey) -> None:
    date = "Thu, 12 Dec 2019 10:16:19 -0000"
    headers = sha256_key.headers("POST", PATH, BODY, date=date)
    _verify(sha256_key, headers)


@pytest.mark.parametrize(
    "date", ["", "yesterday", "Thu, 32 Dec 2019 10:16:19 GMT", "Thu, 12 Dec 2019 25:00:00 GMT"]
)
def test_unparsable_date(sha256_key: SigningKey, date: str) -> None:
    headers = sha256_key.headers("POST", PATH, BODY, date=date)
    with pytest.raises(SignatureError, match="unparsable Date"):
        _verify(sha256_key, headers)


# ------------------------------------------------------------------ headers


@pytest.mark.parametrize(
    "missing", [SIGNATURE_HEADER, DIGEST_HEADER, CIPHER_HEADER, KEY_ID_HEADER, DATE_HEADER]
)
def test_missing_header(sha256_key: SigningKey, missing: str) -> None:
    headers = _headers(sha256_key)
    del headers[missing]
    with pytest.raises(SignatureError) as excinfo:
        _verify(sha256_key, headers)
    assert _reason(excinfo) == f"missing {missing} header"


@pytest.mark.parametrize("cipher", ["DSA", "EC", "", "RSA-PSS"])
def test_unsupported_cipher(sha256_key: SigningKey, cipher: str) -> None:
    with pytest.raises(SignatureError, match="unsupported cipher"):
        _verify(sha256_key, _headers(sha256_key, **{CIPHER_HEADER: cipher}))


@pytest.mark.parametrize("digest", ["SHA1", "MD5", "SHA384", ""])
def test_unsupported_digest(sha256_key: SigningKey, digest: str) -> None:
    with pytest.raises(SignatureError, match="unsupported digest"):
        _verify(sha256_key, _headers(sha256_key, **{DIGEST_HEADER: digest}))


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "QUJD", "====", "\u00e9\u00e9\u00e9\u00e9", "QUJDRA", "A" * 10_000],
)
def test_garbage_signature(sha256_key: SigningKey, signature: str) -> None:
    with pytest.raises(SignatureError):
        _verify(sha256_key, _headers(sha256_key, **{SIGNATURE_HEADER: signature}))


def test_signature_of_other_message(sha256_key: SigningKey) -> None:
    forged = sha256_key.sign(f"POST {PATH} HTTP/1.1", DATE, b"{}")
    with pytest.raises(SignatureError, match="bad signature"):
        _verify(sha256_key, _headers(sha256_key, **{SIGNATURE_HEADER: forged}))


def test_non_ascii_path_is_a_signature_error(sha256_key: SigningKey) -> None:
    with pytest.raises(SignatureError):
        _verify(sha256_key, _headers(sha256_key), path_qs="/hook/\udcff")


def test_signature_error_reason() -> None:
    error = SignatureError("stale Date")
    assert error.reason == "stale Date"
    assert str(error) == "stale Date"


# ------------------------------------------------------------------ key loading


def test_load_public_key_base64_der(key: SigningKey) -> None:
    loaded = load_public_key(key.public_key_b64)
    assert loaded == key.public_key
    verify(loaded, method="POST", path_qs=PATH, headers=_headers(key), body=BODY, now=NOW)


def test_public_key_b64_is_der_spki(sha256_key: SigningKey) -> None:
    der = base64.b64decode(sha256_key.public_key_b64, validate=True)
    assert der == sha256_key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_load_public_key_pem(sha256_key: SigningKey) -> None:
    pem = sha256_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert load_public_key(pem) == sha256_key.public_key
    assert load_public_key(pem.encode()) == sha256_key.public_key
    assert load_public_key("\n  " + pem + "\n") == sha256_key.public_key


def test_load_public_key_pkcs1_pem(sha256_key: SigningKey) -> None:
    pem = sha256_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()
    assert load_public_key(pem) == sha256_key.public_key


def test_load_public_key_wrapped_base64(sha256_key: SigningKey) -> None:
    text = sha256_key.public_key_b64
    wrapped = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    assert load_public_key(wrapped) == sha256_key.public_key


@pytest.mark.parametrize(
    "text", ["", "not a key", "QUJD", "-----BEGIN PUBLIC KEY-----\nQUJD\n-----END PUBLIC KEY-----"]
)
def test_load_public_key_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="public key"):
        load_public_key(text)


def test_load_public_key_rejects_non_rsa() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = ec_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="not an RSA public key"):
        load_public_key(base64.b64encode(der).decode())


def test_private_key_pem_round_trip(sha256_key: SigningKey) -> None:
    pem = sha256_key.private_key_pem()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.from_pem(pem, digest="sha-256", key_id=sha256_key.key_id)
    assert loaded.digest == "SHA256"
    assert loaded.public_key_b64 == sha256_key.public_key_b64
    assert loaded.sign("POST / HTTP/1.1", DATE, BODY) == sha256_key.sign(
        "POST / HTTP/1.1", DATE, BODY
    )


def test_from_pem_rejects_garbage_and_non_rsa() -> None:
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        SigningKey.from_pem("nope", digest="SHA256", key_id="k")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not an RSA private key"):
        SigningKey.from_pem(ec_pem, digest="SHA256", key_id="k")


def test_from_pem_rejects_encrypted(sha256_key: SigningKey) -> None:
    encrypted = sha256_key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="unencrypted"):
        SigningKey.from_pem(encrypted, digest="SHA256", key_id="k")
