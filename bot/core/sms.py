"""SMS text and phone-number utilities.

* :func:`segments` tells which encoding a message body needs (GSM-7 or UCS-2) and how many
  SMS segments it is billed as. The GSM 03.38 character table comes from :mod:`smsutil`; a
  GSM-7 text is counted here (one regular expression and a few ``str.count`` calls: every
  reply is counted three times on its way out), a UCS-2 one is split by smsutil, with the
  corrections listed in :func:`segments`.
* :func:`normalise_phone` turns what a person types into an E.164 number, :func:`is_e164`
  checks the provider's own address rule and :func:`mask_phone` hides a number for logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import phonenumbers
import smsutil

__all__ = [
    "GSM7_MULTI_SEGMENT",
    "GSM7_SINGLE_SEGMENT",
    "UCS2_MULTI_SEGMENT",
    "UCS2_SINGLE_SEGMENT",
    "Encoding",
    "InvalidPhoneNumber",
    "SegmentInfo",
    "is_e164",
    "is_gsm7",
    "mask_phone",
    "normalise_phone",
    "segments",
]

GSM7_SINGLE_SEGMENT: Final = 160
"""Septets in a GSM-7 message that fits in one SMS."""
GSM7_MULTI_SEGMENT: Final = 153
"""Septets per segment of a concatenated GSM-7 message (7 septets go to the UDH)."""
UCS2_SINGLE_SEGMENT: Final = 70
"""UTF-16 code units in a UCS-2 message that fits in one SMS."""
UCS2_MULTI_SEGMENT: Final = 67
"""UTF-16 code units per segment of a concatenated UCS-2 message."""

_ESCAPE: Final = "\x1b"
_GSM_EXTENSION: Final = smsutil.codecs.GSM_EXT_CHARSET
"""Characters of the extension table: each takes two septets (ESC and its code)."""
_NOT_GSM: Final = re.compile(
    "[^" + re.escape(smsutil.codecs.GSM_BASIC_CHARSET.replace(_ESCAPE, "") + _GSM_EXTENSION) + "]"
)
"""Any character outside the GSM 03.38 tables, or a literal ESC (see :func:`is_gsm7`)."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_E164: Final = re.compile(r"\+[0-9]{8,15}")
_PHONE_CHARS: Final = frozenset(" \t-.()/+")


class Encoding(StrEnum):
    """The data coding an SMS body needs."""

    GSM7 = "GSM-7"
    """GSM 03.38 default alphabet, 7 bits per character (extension characters take two)."""
    UCS2 = "UCS-2"
    """UTF-16, used as soon as one character is outside the GSM 03.38 alphabet."""


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """How an SMS body is encoded and billed.

    Attributes:
        encoding: The encoding the whole message needs.
        segments: Number of SMS segments (billing units); at least 1.
        units: Total length in septets for GSM-7 (an extension character counts 2)
            or in UTF-16 code units for UCS-2 (a character outside the BMP counts 2).
        per_segment: Capacity of each segment in the same units: 160/153 for GSM-7 and
            70/67 for UCS-2, for single and concatenated messages respectively.
        remaining: Units still free in the last segment.
    """

    encoding: Encoding
    segments: int
    units: int
    per_segment: int
    remaining: int


def is_gsm7(text: str) -> bool:
    """Return whether *text* can be sent in the GSM-7 default alphabet.

    The empty string is GSM-7. A literal ESC character (U+001B) is not: on the air it is the
    escape to the extension table, so it cannot stand for itself (smsutil accepts it).
    """
    return _NOT_GSM.search(text) is None


def _gsm7_info(text: str) -> SegmentInfo:
    """Segments of a GSM-7 ``text`` (non-empty, every character in the tables), counted
    the way ``smsutil.gsm_split`` splits: greedily, an escape pair never cut."""
    extended = sum(map(text.count, _GSM_EXTENSION))
    units = len(text) + extended
    if units <= GSM7_SINGLE_SEGMENT:
        return SegmentInfo(
            Encoding.GSM7, 1, units, GSM7_SINGLE_SEGMENT, GSM7_SINGLE_SEGMENT - units
        )
    if not extended:
        count = -(-units // GSM7_MULTI_SEGMENT)
        used = units - GSM7_MULTI_SEGMENT * (count - 1)
    else:
        count, used = 1, 0
        for char in text:
            weight = 2 if char in _GSM_EXTENSION else 1
            if used + weight > GSM7_MULTI_SEGMENT:
                count, used = count + 1, 0
            used += weight
    return SegmentInfo(Encoding.GSM7, count, units, GSM7_MULTI_SEGMENT, GSM7_MULTI_SEGMENT - used)


def segments(text: str) -> SegmentInfo:
    """Work out the encoding of *text* and how many SMS segments it takes.

    The empty string counts as one empty GSM-7 segment, as carriers bill it.

    GSM-7 is counted here, UCS-2 by ``smsutil.unicode_split``; both keep GSM escape pairs and
    characters outside the BMP whole, and split as ``smsutil`` does (the tests hold the two
    GSM-7 counts equal). On top of smsutil:

    * a surrogate pair held as two code points (``"\\ud83d\\ude00"``, e.g. from a
      ``surrogatepass`` decode) is joined first, since smsutil would otherwise cut between its
      halves;
    * a literal ESC character forces UCS-2 (see :func:`is_gsm7`);
    * smsutil's UCS-2 byte counts are converted to UTF-16 code units.
    """
    if not text:
        return SegmentInfo(
            encoding=Encoding.GSM7,
            segments=1,
            units=0,
            per_segment=GSM7_SINGLE_SEGMENT,
            remaining=GSM7_SINGLE_SEGMENT,
        )
    if is_gsm7(text):
        return _gsm7_info(text)
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    result = smsutil.unicode_split(text)
    part_units = [int(part.bytes) // 2 for part in result.parts]
    per_segment = UCS2_SINGLE_SEGMENT if len(part_units) == 1 else UCS2_MULTI_SEGMENT
    return SegmentInfo(
        encoding=Encoding.UCS2,
        segments=len(part_units),
        units=sum(part_units),
        per_segment=per_segment,
        remaining=per_segment - part_units[-1],
    )


class InvalidPhoneNumber(ValueError):
    """A string that is not a valid phone number."""

    def __init__(self, number: str, region: str) -> None:
        self.number = number
        self.region = region
        super().__init__(f"{number!r} is not a valid phone number (region {region})")


def normalise_phone(number: str, default_region: str = "AU") -> str:
    """Return *number* in E.164 form, e.g. ``"0491 570 156"`` → ``"+61491570156"``.

    Accepts international (``+61 …``) and national numbers (read in *default_region*), spaces,
    dashes, dots, slashes and parentheses, a national trunk prefix in parentheses
    (``+61 (0)491 …``), the region's own international prefix (``0011 61 …`` in Australia)
    and a leading ``00`` international prefix in any region. Letters are refused rather
    than read as a vanity number or an extension: an SMS goes to a plain number.

    The number must be valid for its country according to libphonenumber's metadata.
    The provider's documented examples (the Australian range 0491 570 xxx, reserved for
    fiction and test use) are valid there, so no looser check is needed.

    Raises:
        InvalidPhoneNumber: *number* is not a valid phone number.
        ValueError: *default_region* is not a region libphonenumber knows.
    """
    region = default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone number region {default_region!r}")

    stripped = number.strip()
    if not stripped or not all(ch.isdecimal() or ch in _PHONE_CHARS for ch in stripped):
        raise InvalidPhoneNumber(number, region)
    if "+" in stripped[1:]:
        raise InvalidPhoneNumber(number, region)

    candidates = [stripped]
    digits_first = stripped.lstrip(" \t(")
    if digits_first.startswith("00"):
        candidates.append("+" + digits_first[2:])
    for candidate in candidates:
        parsed = _parse(candidate, region)
        if parsed is not None:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhoneNumber(number, region)


def _parse(candidate: str, region: str) -> phonenumbers.PhoneNumber | None:
    """Parse *candidate*; return it only if it is a valid number without an extension."""
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if parsed.extension or not phonenumbers.is_valid_number(parsed):
        return None
    return parsed


def is_e164(number: str) -> bool:
    """Return whether *number* is ``+`` followed by 8 to 15 ASCII digits (the provider's rule)."""
    return _E164.fullmatch(number) is not None


def mask_phone(number: str) -> str:
    """Hide all but the last three digits of *number* for logs.

    Other characters are kept, so the shape stays readable:
    ``"+61491570156"`` → ``"+*********156"``, ``"0491 570 156"`` → ``"**** *** 156"``.
    """
    to_mask = sum(ch.isdecimal() for ch in number) - 3
    masked: list[str] = []
    for ch in number:
        if ch.isdecimal() and to_mask > 0:
            masked.append("*")
            to_mask -= 1
        else:
            masked.append(ch)
    return "".join(masked)
