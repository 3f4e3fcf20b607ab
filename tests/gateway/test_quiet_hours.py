"""The quiet-hours policy: windows (wrapping midnight or not) at their edges, in the handset's
local time (DST included), the conservative reading of numbers with several zones, zone
overrides, the default window, strict configuration errors and the origins it holds back."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.config import ConfigError
from bot.outbox.quiet_hours import QuietHours, QuietHoursSettings, Window

SYDNEY_LANDLINE = "+61291234567"  # one zone: Australia/Sydney
AU_MOBILE = "+61491570156"  # non-geographic: every Australian zone
NEW_YORK = "+12125551234"
LONDON_MOBILE = "+447400123456"
INVALID = "+15555550100"  # well-formed, but no valid US number


def policy(**table: object) -> QuietHours:
    return QuietHours.from_config(table)


def local(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        ("21:00-08:00", ["21:00", "23:59", "00:00", "07:59"], ["08:00", "12:00", "20:59"]),
        ("12:00-14:30", ["12:00", "13:00", "14:29"], ["11:59", "14:30", "00:00", "23:59"]),
    ],
)
def test_a_window_contains_its_start_but_not_its_end(
    window: str, inside: list[str], outside: list[str]
) -> None:
    parsed = Window.parse(window)
    assert str(parsed) == window
    assert parsed.wraps == (window == "21:00-08:00")
    assert all(parsed.contains(time.fromisoformat(t)) for t in inside)
    assert not any(parsed.contains(time.fromisoformat(t)) for t in outside)


def test_a_one_zone_number_waits_for_the_local_end_of_a_window_wrapping_midnight() -> None:
    q = policy(AU="20:00-09:00")
    # Summer (AEDT, UTC+11): 19:59 is fine, 20:00 waits until 09:00 tomorrow.
    assert q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 10, 19, 59)) is None
    until = q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 10, 20, 0))
    assert until == local("Australia/Sydney", 2030, 1, 11, 9, 0)
    assert until is not None and until.tzinfo == UTC
    assert until == datetime(2030, 1, 10, 22, 0, tzinfo=UTC)
    # After midnight it ends the same day; at 09:00 sharp sending is fine again.
    early = local("Australia/Sydney", 2030, 1, 11, 8, 59)
    assert q.release_at(SYDNEY_LANDLINE, early) == local("Australia/Sydney", 2030, 1, 11, 9, 0)
    assert q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 11, 9, 0)) is None
    # Winter (AEST, UTC+10): the same wall-clock end is an hour later in UTC.
    winter = q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 7, 10, 23, 0))
    assert winter == datetime(2030, 7, 10, 23, 0, tzinfo=UTC)


def test_a_window_within_a_day_and_the_deferral_details() -> None:
    q = policy(US="12:00-14:30")
    deferral = q.check(NEW_YORK, local("America/New_York", 2030, 1, 10, 13, 0))
    assert deferral is not None
    assert deferral.until == datetime(2030, 1, 10, 19, 30, tzinfo=UTC)  # 14:30 EST
    assert deferral.until_iso == "2030-01-10T19:30:00Z"
    assert deferral.until_ms == int(deferral.until.timestamp() * 1000)
    assert deferral.reason == "quiet hours US 12:00-14:30"
    assert q.check(NEW_YORK, local("America/New_York", 2030, 1, 10, 14, 30)) is None


def test_the_end_is_local_wall_clock_time_across_a_dst_change() -> None:
    # 2030-03-10 is the US spring-forward night: 00:00 EST, released at 08:00 EDT.
    q = policy(US="21:00-08:00")
    until = q.release_at(NEW_YORK, local("America/New_York", 2030, 3, 10, 0, 0))
    assert until == datetime(2030, 3, 10, 12, 0, tzinfo=UTC)


def test_a_mobile_with_several_zones_waits_until_every_zone_is_out_of_its_window() -> None:
    q = policy(AU="20:00-09:00")
    # 10:30 in Sydney but 07:30 in Perth and earlier still in Christmas Island and Cocos
    # (UTC+6:30): the send waits for 09:00 in Cocos, the last zone to leave the window.
    now = datetime(2030, 1, 10, 23, 30, tzinfo=UTC)
    deferral = q.check(AU_MOBILE, now)
    assert deferral is not None
    assert deferral.until == datetime(2030, 1, 11, 2, 30, tzinfo=UTC)
    assert deferral.until.astimezone(ZoneInfo("Indian/Cocos")).time() == time(9, 0)
    assert deferral.region == "AU"
    # 23:00 in Sydney (already quiet there): the same release, the latest of all zones.
    assert q.release_at(AU_MOBILE, datetime(2030, 1, 10, 12, 0, tzinfo=UTC)) == deferral.until
    # 14:00 in Sydney, 09:30 in Cocos: every zone is in daytime.
    assert q.release_at(AU_MOBILE, datetime(2030, 1, 11, 3, 0, tzinfo=UTC)) is None


def test_a_country_zone_override_replaces_the_numbers_zones() -> None:
    q = policy(AU="20:00-09:00", timezones={"AU": "Australia/Sydney"})
    assert q.release_at(AU_MOBILE, datetime(2030, 1, 10, 23, 30, tzinfo=UTC)) is None
    until = q.release_at(AU_MOBILE, local("Australia/Sydney", 2030, 1, 10, 23, 0))
    assert until == local("Australia/Sydney", 2030, 1, 11, 9, 0)


def test_the_default_window_covers_other_countries_and_unknown_numbers_in_utc() -> None:
    q = policy(default="21:00-08:00", AU="20:00-09:00")
    # A British mobile: the default window in London time (BST in July: UTC+1).
    until = q.release_at(LONDON_MOBILE, local("Europe/London", 2030, 7, 1, 22, 0))
    assert until == local("Europe/London", 2030, 7, 2, 8, 0)
    # A number that is not valid: its place is unknown, the default window runs in UTC.
    deferral = q.check(INVALID, datetime(2030, 7, 1, 22, 0, tzinfo=UTC))
    assert deferral is not None
    assert (deferral.until, deferral.region) == (datetime(2030, 7, 2, 8, 0, tzinfo=UTC), "default")
    assert deferral.reason == "quiet hours default 21:00-08:00"
    # The country's own window wins over the default.
    assert q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 10, 20, 30))
    assert q.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 10, 8, 30))


def test_without_a_default_only_the_configured_countries_have_quiet_hours() -> None:
    q = policy(AU="20:00-09:00")
    assert q.active
    assert q.release_at(LONDON_MOBILE, local("Europe/London", 2030, 7, 1, 3, 0)) is None
    assert q.release_at(INVALID, datetime(2030, 7, 1, 3, 0, tzinfo=UTC)) is None
    empty = QuietHours.from_config(None)
    assert not empty.active
    assert empty.release_at(SYDNEY_LANDLINE, local("Australia/Sydney", 2030, 1, 1, 3)) is None


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        policy(AU="20:00-09:00").check(SYDNEY_LANDLINE, datetime(2030, 1, 1, 3, 0))


def test_only_sends_that_are_not_answers_are_held_back() -> None:
    assert QuietHours.applies_to("timer")
    assert QuietHours.applies_to("api")
    assert QuietHours.applies_to("something-new")  # unknown: the conservative choice
    assert not QuietHours.applies_to("reply")
    assert not QuietHours.applies_to("compliance")


# ----------------------------------------------------------------------------- configuration


def test_the_settings_accept_the_toml_table_shape() -> None:
    settings_ = QuietHoursSettings.model_validate(
        {
            "default": " 21:00-08:00 ",
            "AU": "20:00-09:00",
            "us": "21:00-08:00",
            "timezones": {"au": "Australia/Sydney"},
        }
    )
    assert settings_.default == "21:00-08:00"
    assert settings_.countries == {"AU": "20:00-09:00", "US": "21:00-08:00"}
    assert settings_.timezones == {"AU": "Australia/Sydney"}
    assert QuietHoursSettings.model_validate(settings_.model_dump()) == settings_


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"AU": "25:00-08:00"}, 'quiet_hours.AU: "25:00-08:00" is not HH:MM-HH:MM'),
        ({"AU": "9:00-17:00"}, 'quiet_hours.AU: "9:00-17:00" is not HH:MM-HH:MM'),
        ({"AU": "21:00 - 08:00"}, 'quiet_hours.AU: "21:00 - 08:00" is not HH:MM-HH:MM'),
        ({"default": 21}, "quiet_hours.default: 21 is not HH:MM-HH:MM"),
        (
            {"US": "08:00-08:00"},
            'quiet_hours.US: "08:00-08:00" is an empty window (start equals end)',
        ),
        (
            {"Australia": "20:00-09:00"},
            'quiet_hours.Australia: not a country code (ISO 3166 alpha-2) or "default" '
            'or "timezones"',
        ),
        ({"timezones": "UTC"}, "quiet_hours.timezones: must be a table"),
        (
            {"timezones": {"AU": "Australia/Atlantis"}},
            'quiet_hours.timezones.AU: "Australia/Atlantis" is not a time zone',
        ),
        (
            {"timezones": {"XX": "UTC"}},
            "quiet_hours.timezones.XX: not a country code (ISO 3166 alpha-2)",
        ),
    ],
)
def test_a_bad_table_is_one_clear_line(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        QuietHours.from_config(table)
    assert str(caught.value) == message


def test_every_problem_is_named_on_the_same_line() -> None:
    with pytest.raises(ConfigError) as caught:
        QuietHours.from_config({"AU": "25:00-08:00", "US": "x", "timezones": {"AU": "Nowhere"}})
    text = str(caught.value)
    assert "\n" not in text
    assert text.count("; ") == 2
    assert 'quiet_hours.US: "x" is not HH:MM-HH:MM' in text


# ----------------------------------------------------------------------------- property


@settings(max_examples=150, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2029, 1, 1), max_value=datetime(2031, 1, 1), timezones=st.just(UTC)
    ),
    start=st.integers(0, 24 * 60 - 1),
    length=st.integers(1, 16 * 60),
    number=st.sampled_from([AU_MOBILE, SYDNEY_LANDLINE, NEW_YORK, LONDON_MOBILE, INVALID]),
)
def test_the_release_is_the_first_instant_allowed_in_every_zone(
    moment: datetime, start: int, length: int, number: str
) -> None:
    end = (start + length) % (24 * 60)
    window = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    q = policy(default=window)
    rule = q.rule(number)
    assert rule is not None
    _, parsed, zones = rule

    def quiet(at: datetime) -> bool:
        return any(parsed.contains(at.astimezone(z).time()) for z in zones)

    until = q.release_at(number, moment)
    if until is None:
        assert not quiet(moment)
        return
    assert until > moment
    assert not quiet(until)
    assert quiet(until - timedelta(microseconds=1))  # nothing earlier would do
