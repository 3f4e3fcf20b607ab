"""Tests for bot.core.sms: encoding detection, segment counting and phone numbers."""

from __future__ import annotations

import dataclasses

import phonenumbers
import pytest
import smsutil
from hypothesis import given
from hypothesis import strategies as st

from bot.core.sms import (
    Encoding,
    InvalidPhoneNumber,
    SegmentInfo,
    is_e164,
    is_gsm7,
    mask_phone,
    normalise_phone,
    segments,
)

# The test oracle's own list of GSM 03.38 extension characters (form feed is the page break).
EXTENSION = "^{}\\[~]|€\f"
# The basic table is taken from smsutil, minus ESC (which cannot stand for itself on the air).
BASIC = smsutil.codecs.GSM_BASIC_CHARSET.replace("\x1b", "")
EMOJI = "\U0001f600"
FULLWIDTH = {ord(str(d)): 0xFF10 + d for d in range(10)}

# ---------------------------------------------------------------------------------------------
# Independent oracle
# ---------------------------------------------------------------------------------------------


def _oracle(weights: list[int], single: int, multi: int) -> tuple[int, int, int, int]:
    """(segments, units, per_segment, remaining) for characters of the given unit weights.

    A character never straddles two segments (an escape pair or a surrogate pair stays whole).
    """
    units = sum(weights)
    if units <= single:
        return 1, units, single, single - units
    count, used = 1, 0
    for weight in weights:
        if used + weight > multi:
            count, used = count + 1, 0
        used += weight
    return count, units, multi, multi - used


def gsm_oracle(text: str) -> tuple[int, int, int, int]:
    return _oracle([2 if ch in EXTENSION else 1 for ch in text], 160, 153)


def ucs2_oracle(text: str) -> tuple[int, int, int, int]:
    return _oracle([2 if ord(ch) > 0xFFFF else 1 for ch in text], 70, 67)


def as_tuple(info: SegmentInfo) -> tuple[int, int, int, int]:
    return info.segments, info.units, info.per_segment, info.remaining


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------


def test_oracle_extension_table_matches_smsutil() -> None:
    assert set(smsutil.GSM_EXT_CHARSET) == set(EXTENSION)


def test_empty_text_is_one_empty_gsm_segment() -> None:
    assert segments("") == SegmentInfo(
        Encoding.GSM7, segments=1, units=0, per_segment=160, remaining=160
    )


def test_encoding_values() -> None:
    assert str(Encoding.GSM7) == Encoding.GSM7.value == "GSM-7"
    assert str(Encoding.UCS2) == Encoding.UCS2.value == "UCS-2"


def test_segment_info_is_frozen() -> None:
    info = segments("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.segments = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, SegmentInfo(Encoding.GSM7, 1, 160, 160, 0)),
        ("a" * 161, SegmentInfo(Encoding.GSM7, 2, 161, 153, 145)),  # parts 153 + 8
        ("a" * 306, SegmentInfo(Encoding.GSM7, 2, 306, 153, 0)),
        ("a" * 307, SegmentInfo(Encoding.GSM7, 3, 307, 153, 152)),
        ("a" * 159 + "€", SegmentInfo(Encoding.GSM7, 2, 161, 153, 145)),
        ("a" * 158 + "€", SegmentInfo(Encoding.GSM7, 1, 160, 160, 0)),
        ("Hello\nWorld", SegmentInfo(Encoding.GSM7, 1, 11, 160, 149)),
        ("Ç", SegmentInfo(Encoding.GSM7, 1, 1, 160, 159)),
        ("ç", SegmentInfo(Encoding.UCS2, 1, 1, 70, 69)),
        ("ж" * 70, SegmentInfo(Encoding.UCS2, 1, 70, 70, 0)),
        ("ж" * 71, SegmentInfo(Encoding.UCS2, 2, 71, 67, 63)),
        (EMOJI, SegmentInfo(Encoding.UCS2, 1, 2, 70, 68)),
        (EMOJI * 35, SegmentInfo(Encoding.UCS2, 1, 70, 70, 0)),
        (EMOJI + "a" * 69, SegmentInfo(Encoding.UCS2, 2, 71, 67, 63)),
    ],
)
def test_segments_examples(text: str, expected: SegmentInfo) -> None:
    assert segments(text) == expected


def test_one_non_gsm_character_switches_the_whole_message() -> None:
    assert segments("a" * 100).encoding is Encoding.GSM7
    info = segments("a" * 100 + "ç")
    assert info.encoding is Encoding.UCS2
    assert (info.segments, info.units) == (2, 101)


def test_escape_pair_is_never_split() -> None:
    # 152 septets, then "{" (2 septets) does not fit in the first segment's last septet.
    info = segments("a" * 152 + "{" + "a" * 10)
    assert (info.segments, info.units, info.remaining) == (2, 164, 153 - 12)
    assert smsutil.gsm_split("a" * 152 + "{" + "a" * 10).parts[0].content == "a" * 152


def test_emoji_is_never_split_across_segments() -> None:
    # 66 units, then the emoji's 2 units do not fit in the 67th: it moves to segment 2.
    text = "a" * 66 + EMOJI + "a" * 5
    assert as_tuple(segments(text)) == (2, 73, 67, 67 - 7)


def test_surrogate_pair_as_two_code_points_is_joined_not_split() -> None:
    # smsutil alone cuts "\ud83d\ude00" * 36 after the 67th code unit, between two halves.
    text = "\ud83d\ude00" * 36
    bare = smsutil.unicode_split(text)
    assert [part.bytes for part in bare.parts] == [134, 10]  # the behaviour worked around
    assert segments(text) == segments(EMOJI * 36) == SegmentInfo(Encoding.UCS2, 2, 72, 67, 61)


def test_lone_surrogate_counts_one_unit() -> None:
    assert segments("a\ud83d") == SegmentInfo(Encoding.UCS2, 1, 2, 70, 68)


def test_literal_escape_character_forces_ucs2() -> None:
    assert not is_gsm7("a\x1bb")
    assert segments("a\x1bb").encoding is Encoding.UCS2


def test_is_gsm7() -> None:
    assert is_gsm7("")
    assert is_gsm7("Hello {world} €5 @ÄÖÑÜ§¿")
    assert not is_gsm7("héllo ç")
    assert not is_gsm7(EMOJI)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

gsm_chars = st.sampled_from(BASIC + EXTENSION)
gsm_texts = st.text(alphabet=gsm_chars, max_size=700)
# Any code point but surrogates, plus some weight on emoji and on GSM characters.
any_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    gsm_chars,
)
non_gsm_chars = any_chars.filter(lambda ch: not is_gsm7(ch))
ucs2_texts = st.builds(
    lambda head, forced, tail: head + forced + tail,
    st.text(alphabet=any_chars, max_size=200),
    non_gsm_chars,
    st.text(alphabet=any_chars, max_size=200),
)


@given(gsm_texts)
def test_gsm_segments_match_oracle(text: str) -> None:
    info = segments(text)
    assert info.encoding is Encoding.GSM7
    assert info.units == len(text) + sum(ch in EXTENSION for ch in text)
    assert as_tuple(info) == gsm_oracle(text)


@given(st.one_of(gsm_texts, st.text(alphabet=BASIC + "x" * 20 + EXTENSION, max_size=700)))
def test_gsm_segments_are_smsutils_split(text: str) -> None:
    """The GSM-7 count done here splits exactly as smsutil.gsm_split does."""
    info = segments(text)
    parts = smsutil.gsm_split(text).parts if text else []
    per_segment = 160 if len(parts) <= 1 else 153
    last = int(parts[-1].bytes) if parts else 0
    assert as_tuple(info) == (
        max(len(parts), 1),
        sum(int(part.bytes) for part in parts),
        per_segment,
        per_segment - last,
    )


@given(st.text(alphabet=st.one_of(st.characters(), gsm_chars, st.just("\x1b")), max_size=40))
def test_is_gsm7_is_smsutils_check_without_escape(text: str) -> None:
    expected = not text or ("\x1b" not in text and bool(smsutil.is_valid_gsm(text)))
    assert is_gsm7(text) is expected
    assert (segments(text).encoding is Encoding.GSM7) is expected


@given(ucs2_texts)
def test_ucs2_segments_match_oracle(text: str) -> None:
    info = segments(text)
    assert info.encoding is Encoding.UCS2
    assert info.units == len(text.encode("utf-16-le")) // 2
    assert as_tuple(info) == ucs2_oracle(text)


@given(gsm_texts, st.text(alphabet=gsm_chars, min_size=1, max_size=50))
def test_gsm_segment_count_is_monotonic(text: str, more: str) -> None:
    assert segments(text + more).segments >= segments(text).segments


@given(ucs2_texts, st.text(alphabet=any_chars, min_size=1, max_size=50))
def test_ucs2_segment_count_is_monotonic(text: str, more: str) -> None:
    assert segments(text + more).segments >= segments(text).segments


def _as_surrogate_code_points(text: str) -> str:
    out = []
    for ch in text:
        if ord(ch) > 0xFFFF:
            offset = ord(ch) - 0x10000
            out += [chr(0xD800 + (offset >> 10)), chr(0xDC00 + (offset & 0x3FF))]
        else:
            out.append(ch)
    return "".join(out)


@given(st.one_of(ucs2_texts, st.text(alphabet=["a", "ж", EMOJI], min_size=36, max_size=300)))
def test_split_surrogate_pairs_count_like_real_characters(text: str) -> None:
    assert segments(_as_surrogate_code_points(text)) == segments(text)


@given(st.one_of(gsm_texts, ucs2_texts))
def test_segment_info_invariants(text: str) -> None:
    info = segments(text)
    assert info.segments >= 1
    assert 0 <= info.remaining < info.per_segment or (info.remaining == info.per_segment == 160)
    if info.segments == 1:
        assert info.units + info.remaining == info.per_segment
    else:
        assert info.units > {Encoding.GSM7: 160, Encoding.UCS2: 70}[info.encoding]


# ---------------------------------------------------------------------------------------------
# Phone numbers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+61491570156", "+61491570156"),
        ("0491 570 156", "+61491570156"),
        ("0491-570-156", "+61491570156"),
        ("(04) 9157 0156", "+61491570156"),
        ("  +61 491 570 156  ", "+61491570156"),
        ("+61 (0)491 570 156", "+61491570156"),
        ("+61.491.570.156", "+61491570156"),
        ("0061 491 570 156", "+61491570156"),
        ("0011 61 491 570 156", "+61491570156"),
        ("(02) 9876 5432", "+61298765432"),
        ("0044 7911 123456", "+447911123456"),
        ("+1 (201) 555-0123", "+12015550123"),
    ],
)
def test_normalise_phone(raw: str, expected: str) -> None:
    assert normalise_phone(raw) == expected


def test_normalise_phone_other_default_region() -> None:
    assert normalise_phone("07911 123456", default_region="GB") == "+447911123456"
    assert normalise_phone("07911 123456", default_region="gb") == "+447911123456"
    assert normalise_phone("0049 30 901820", default_region="GB") == "+4930901820"


def test_provider_documented_test_numbers_are_accepted() -> None:
    # The provider's examples use the AU range 0491 570 xxx, reserved for fiction.
    for last in ("156", "157", "158", "159", "110"):
        number = f"+61491570{last}"
        assert phonenumbers.is_valid_number(phonenumbers.parse(number))
        assert normalise_phone(number) == number


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12ab",
        "abc",
        "1800FLOWERS",
        "0491570156 ext 12",
        "0491570156;ext=12",
        "tel:+61491570156",
        "+6149157015",  # one digit short
        "+614915701567",  # one digit long
        "0491 570 15",
        "+61 491 +570 156",
        "+447700900123",  # not a valid UK number per the metadata
        "123",
    ],
)
def test_normalise_phone_rejects(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        normalise_phone(raw)
    assert str(excinfo.value) == f"{raw!r} is not a valid phone number (region AU)"
    assert excinfo.value.number == raw
    assert isinstance(excinfo.value, ValueError)


def test_invalid_phone_message() -> None:
    with pytest.raises(
        InvalidPhoneNumber, match=r"^'12ab' is not a valid phone number \(region AU\)$"
    ):
        normalise_phone("12ab")
    with pytest.raises(InvalidPhoneNumber, match=r"\(region GB\)$"):
        normalise_phone("12ab", default_region="gb")


def test_invalid_phone_message_is_one_line() -> None:
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        normalise_phone("0491\n570 156x")
    assert "\n" not in str(excinfo.value)


def test_normalise_phone_unknown_region() -> None:
    with pytest.raises(ValueError, match="unknown phone number region 'ZZ'") as excinfo:
        normalise_phone("0491 570 156", default_region="ZZ")
    assert not isinstance(excinfo.value, InvalidPhoneNumber)


@given(st.integers(min_value=0, max_value=999))
def test_normalise_phone_is_idempotent_on_e164(last: int) -> None:
    number = normalise_phone(f"0491 570 {last:03d}")
    assert is_e164(number)
    assert normalise_phone(number) == number


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+61491570156", True),
        ("+12345678", True),  # 8 digits
        ("+123456789012345", True),  # 15 digits
        ("+1234567", False),  # 7 digits
        ("+1234567890123456", False),  # 16 digits
        ("61491570156", False),
        ("+61 491 570 156", False),
        ("+61491570156\n", False),
        ("+" + "61491570156".translate(FULLWIDTH), False),
        ("", False),
        ("+", False),
    ],
)
def test_is_e164(number: str, expected: bool) -> None:
    assert is_e164(number) is expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+61491570156", "+********156"),
        ("0491 570 156", "**** *** 156"),
        ("+447911123456", "+*********456"),
        ("156", "156"),
        ("12", "12"),
        ("", ""),
    ],
)
def test_mask_phone(number: str, expected: str) -> None:
    assert mask_phone(number) == expected


@given(st.text(alphabet="+0123456789 -()", max_size=30))
def test_mask_phone_keeps_only_last_three_digits(number: str) -> None:
    masked = mask_phone(number)
    assert len(masked) == len(number)
    digits = [ch for ch in number if ch.isdigit()]
    assert [ch for ch in masked if ch.isdigit()] == digits[-3:]
    assert masked.count("*") == max(len(digits) - 3, 0)
