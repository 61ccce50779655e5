"""The schedule of checks at one call site, and the policy's table of sites."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from kl_guard._config import Config
from kl_guard._policy import ScheduleTable, SiteSchedule


def checked_calls(config: Config, calls: int, site: SiteSchedule | None = None) -> list[int]:
    site = SiteSchedule(config.warmup) if site is None else site
    return [n for n in range(1, calls + 1) if site.due(config)]


def test_default_schedule_checks_the_warmup_then_doubles_the_gap() -> None:
    config = Config(warmup=4, max_interval=32)
    assert checked_calls(config, 200) == [1, 2, 3, 4, 8, 16, 32, 64, 96, 128, 160, 192]


def test_check_every_checks_the_first_call_and_every_nth_after() -> None:
    assert checked_calls(Config(check_every=3), 10) == [1, 4, 7, 10]
    assert checked_calls(Config(check_every=1), 4) == [1, 2, 3, 4]


@given(
    warmup=st.integers(1, 16),
    max_interval=st.integers(1, 64),
    calls=st.integers(1, 2_000),
)
def test_default_schedule_properties(warmup: int, max_interval: int, calls: int) -> None:
    config = Config(warmup=warmup, max_interval=max_interval)
    checks = checked_calls(config, calls)
    assert checks[: min(warmup, calls)] == list(range(1, min(warmup, calls) + 1))
    gaps = [b - a for a, b in zip(checks, checks[1:], strict=False)]
    # the gap never shrinks and never exceeds the cap
    assert gaps == sorted(gaps)
    assert all(gap <= max_interval for gap in gaps)
    # no stretch longer than the cap goes unchecked, the last one included
    assert calls - checks[-1] < max_interval


def test_a_skip_taken_below_zero_by_racing_threads_means_check_next() -> None:
    config = Config(check_every=5)
    site = SiteSchedule(config.warmup)
    assert site.due(config)
    site.skip = -1  # two threads both decremented the last skip
    assert checked_calls(config, 6, site) == [1, 6]


def test_sites_are_kept_apart_and_made_once() -> None:
    policy = ScheduleTable()
    config = dataclasses.replace(Config(), check_every=2)
    a, b = compile("x", "<a>", "eval"), compile("y", "<b>", "eval")
    assert [policy.site(a, 0, config).due(config) for _ in range(3)] == [True, False, True]
    assert policy.site(b, 0, config).due(config)
    assert policy.site(a, 2, config).due(config)  # another instruction of the same code
    assert policy.site(a, 0, config) is policy.site(a, 0, config)
    assert len(policy) == 3


def test_a_new_code_object_with_a_freed_ones_id_starts_a_new_site() -> None:
    """CPython reuses the id of a freed object: re-run notebook cells,
    regenerated code. The new code's first call must be checked."""
    policy = ScheduleTable()
    config = Config(check_every=1000)
    for generation in range(200):
        code = compile(f"x + {generation}", "<cell>", "eval")
        assert policy.site(code, 0, config).due(config)  # its first call is checked
        assert not policy.site(code, 0, config).due(config)
        del code  # its id is free for the next generation's code
    assert len(policy) <= policy.LIMIT


def test_the_sites_stay_bounded_and_keep_the_live_ones() -> None:
    policy = ScheduleTable()
    config = Config(check_every=1000)
    live = compile("z", "<live>", "eval")
    assert policy.site(live, 0, config).due(config)
    for generation in range(3 * policy.LIMIT):
        policy.site(compile(f"x + {generation}", "<cell>", "eval"), 0, config)
        assert len(policy) <= policy.LIMIT
    assert not policy.site(live, 0, config).due(config)  # still the same schedule


@given(
    warmup=st.integers(1, 16),
    max_interval=st.integers(1, 64),
    check_every=st.none() | st.integers(1, 20),
    calls=st.integers(0, 2_000),
)
def test_a_site_counts_every_call_without_a_counter_of_its_own(
    warmup: int, max_interval: int, check_every: int | None, calls: int
) -> None:
    config = Config(warmup=warmup, max_interval=max_interval, check_every=check_every)
    site = SiteSchedule(config.warmup)
    checks = checked_calls(config, calls, site)
    assert (site.seen, site.checks) == (calls, len(checks))


def test_calls_let_through_by_racing_threads_are_counted() -> None:
    config = Config(check_every=5)
    site = SiteSchedule(config.warmup)
    assert site.due(config)
    site.skip = -1  # two threads both decremented the last skip: five calls let through
    assert site.seen == 6
    assert site.due(config)  # the next is checked, and the race's extra call kept
    assert (site.seen, site.checks) == (7, 2)


def test_the_policy_counts_the_calls_of_sites_it_dropped() -> None:
    policy = ScheduleTable()
    config = Config(check_every=2)
    codes = [compile(f"x{i}", f"<{i}>", "eval") for i in range(ScheduleTable.LIMIT + 10)]
    for code in codes:  # past LIMIT: the oldest sites are dropped
        for _ in range(3):
            policy.site(code, 0, config).due(config)
    assert len(policy) < len(codes)
    assert policy.counts() == (3 * len(codes), 2 * len(codes))
