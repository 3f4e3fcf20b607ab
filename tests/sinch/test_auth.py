"""Provider authentication: the public HMAC test vector, Basic, and verification."""

import base64

import httpx
import pytest

from bot.sinch.auth import (
    HmacAuth,
    basic_header,
    content_md5,
    hmac_headers,
    hmac_signature,
    signing_string,
    verify,
)

KEY, SECRET = "API_KEY_12345678", "API_SECRET_12345678"
DATE = "Thu, 12 Dec 2019 10:16:19 GMT"
BODY = (
    b'{"messages": [{"content": "Content", "destination_number": "+1234567890", '
    b'"delivery_report": true, "format": "SMS"}]}'
)
CREDENTIALS = {KEY: SECRET}


def test_public_vector_post() -> None:
    assert content_md5(BODY) == "5fe6c18746c7d300f04f08a1db90ced2"
    headers = hmac_headers(
        KEY, SECRET, method="POST", path_qs="/v1/messages", body=BODY, algorithm="sha1", date=DATE
    )
    assert headers["x-Content-MD5"] == "5fe6c18746c7d300f04f08a1db90ced2"
    assert 'signature="sLAeOwXXix428meq3vhSmwdN2gg="' in headers["Authorization"]
    assert 'algorithm="hmac-sha1"' in headers["Authorization"]
    assert 'headers="Date x-Content-MD5 request-line"' in headers["Authorization"]


def test_public_vector_get_without_body() -> None:
    string = signing_string(["Date", "request-line"], {"Date": DATE}, "GET /v1 HTTP/1.1")
    assert hmac_signature(SECRET, string, "sha1") == "GXoYmlLRdJSmIMbeM8YfL+ngCnY="
    headers = hmac_headers(
        KEY, SECRET, method="GET", path_qs="/v1", body=b"", algorithm="sha1", date=DATE
    )
    assert "x-Content-MD5" not in headers
    assert 'signature="GXoYmlLRdJSmIMbeM8YfL+ngCnY="' in headers["Authorization"]


def test_sha256_uses_content_md5_header() -> None:
    headers = hmac_headers(KEY, SECRET, method="POST", path_qs="/v1/messages", body=BODY, date=DATE)
    assert headers["Content-MD5"] == content_md5(BODY)
    assert 'algorithm="hmac-sha256"' in headers["Authorization"]
    assert 'headers="Date Content-MD5 request-line"' in headers["Authorization"]


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_verify_accepts_both_hmac_variants(algorithm: str) -> None:
    headers = hmac_headers(
        KEY,
        SECRET,
        method="POST",
        path_qs="/v1/messages?x=1",
        body=BODY,
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    assert (
        verify(
            headers, method="POST", path_qs="/v1/messages?x=1", body=BODY, credentials=CREDENTIALS
        )
        == KEY
    )


def test_verify_accepts_lowercase_date_in_header_list() -> None:
    # The official SDK lists "date" but signs "Date: ...".
    md5 = content_md5(BODY)
    sig = hmac_signature(
        SECRET, f"Date: {DATE}\nx-Content-MD5: {md5}\nPOST /v1/messages HTTP/1.1", "sha1"
    )
    headers = {
        "date": DATE,
        "x-content-md5": md5,
        "authorization": f'hmac username="{KEY}", algorithm="hmac-sha1", '
        f'headers="date x-Content-MD5 request-line", signature="{sig}"',
    }
    assert (
        verify(headers, method="POST", path_qs="/v1/messages", body=BODY, credentials=CREDENTIALS)
        == KEY
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: {**h, "Date": "Fri, 13 Dec 2019 10:16:19 GMT"},
        lambda h: {**h, "Content-MD5": "0" * 32},
        lambda h: {**h, "Authorization": h["Authorization"].replace(KEY, "someone-else")},
        lambda h: {**h, "Authorization": h["Authorization"].replace("hmac-sha256", "hmac-md5")},
        lambda h: {**h, "Authorization": "hmac garbage"},
        lambda h: {k: v for k, v in h.items() if k != "Authorization"},
    ],
)
def test_verify_rejects_tampering(mutate: object) -> None:
    headers = hmac_headers(KEY, SECRET, method="POST", path_qs="/v1/messages", body=BODY, date=DATE)
    bad = mutate(headers)  # type: ignore[operator]
    assert (
        verify(bad, method="POST", path_qs="/v1/messages", body=BODY, credentials=CREDENTIALS)
        is None
    )


def test_verify_rejects_other_body_or_path() -> None:
    headers = hmac_headers(KEY, SECRET, method="POST", path_qs="/v1/messages", body=BODY, date=DATE)
    assert (
        verify(
            headers,
            method="POST",
            path_qs="/v1/messages",
            body=BODY + b" ",
            credentials=CREDENTIALS,
        )
        is None
    )
    assert (
        verify(headers, method="POST", path_qs="/v1/replies", body=BODY, credentials=CREDENTIALS)
        is None
    )
    assert (
        verify(headers, method="PUT", path_qs="/v1/messages", body=BODY, credentials=CREDENTIALS)
        is None
    )


def test_basic() -> None:
    header = basic_header(KEY, SECRET)
    assert header == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert (
        verify(
            {"Authorization": header}, method="GET", path_qs="/", body=b"", credentials=CREDENTIALS
        )
        == KEY
    )
    wrong = basic_header(KEY, "nope")
    assert (
        verify(
            {"Authorization": wrong}, method="GET", path_qs="/", body=b"", credentials=CREDENTIALS
        )
        is None
    )
    for garbage in ("Basic ???", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x", ""):
        assert (
            verify(
                {"Authorization": garbage},
                method="GET",
                path_qs="/",
                body=b"",
                credentials=CREDENTIALS,
            )
            is None
        )


async def test_httpx_auth_signs_the_bytes_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ok = verify(
            request.headers,
            method=request.method,
            path_qs=request.url.raw_path.decode(),
            body=request.content,
            credentials=CREDENTIALS,
        )
        return httpx.Response(200 if ok else 401)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=HmacAuth(KEY, SECRET, "sha1")
    ) as client:
        response = await client.post("https://x.test/v1/messages?a=b", content=BODY)
        assert response.status_code == 200
        response = await client.get("https://x.test/v1/messages/abc")
        assert response.status_code == 200
    assert "x-Content-MD5" in seen[0].headers
