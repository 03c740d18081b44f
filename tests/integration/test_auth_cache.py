"""The auth cache with members in the database: a refused login is
remembered (its log line says "(cached)"), and whatever `subgate member`
changes takes effect at the next login, cache or not: a new password, a
password that was refused before and is now the right one, a disabled
member. (The cache with a directory: test_ldap.py.)"""

import re

from helpers import assert_reply, auth_plain, connect

ALICE = "alice@example.org"
OLD = "alice-Secret-1"  # helpers.PASSWORDS


def login(gw, user, password):
    s = connect(gw)
    try:
        return auth_plain(s, user, password)
    finally:
        s.quit()


def fail_lines(gw, reason):
    pat = re.compile(r"member=%s result=fail reason=\"%s\"" % (
        re.escape(ALICE), re.escape(reason)))
    return [l for l in gw.log_text().splitlines() if pat.search(l)]


def passwd(gw, password):
    gw.admin("member", "passwd", ALICE, "--password-stdin",
             input=password + "\n")


def test_refused_login_is_remembered(make_gateway):
    gw = make_gateway()
    for _ in range(2):
        assert_reply(login(gw, ALICE, "guess-1"), 535, "5.7.8")
    gw.wait_log(r"member=alice@example\.org result=fail "
                r"reason=\"bad password \(cached\)\"")
    assert len(fail_lines(gw, "bad password")) == 1


def test_new_password_takes_effect_at_once(make_gateway):
    gw = make_gateway()
    # Twice: the second login comes from the cache.
    assert_reply(login(gw, ALICE, OLD), 235, "2.7.0")
    assert_reply(login(gw, ALICE, OLD), 235, "2.7.0")
    # Refused, and remembered as refused: the next new password.
    assert_reply(login(gw, ALICE, "alice-New-2"), 535, "5.7.8")
    assert_reply(login(gw, ALICE, "alice-New-2"), 535, "5.7.8")
    passwd(gw, "alice-New-2")
    assert_reply(login(gw, ALICE, OLD), 535, "5.7.8")
    assert_reply(login(gw, ALICE, "alice-New-2"), 235, "2.7.0")
    # Changed again within the same second: still the newest one only.
    passwd(gw, "alice-New-3")
    assert_reply(login(gw, ALICE, "alice-New-2"), 535, "5.7.8")
    assert_reply(login(gw, ALICE, "alice-New-3"), 235, "2.7.0")


def test_disable_takes_effect_at_once(make_gateway):
    gw = make_gateway()
    assert_reply(login(gw, ALICE, OLD), 235, "2.7.0")
    gw.admin("member", "disable", ALICE)
    assert_reply(login(gw, ALICE, OLD), 535, "5.7.8")
    gw.admin("member", "enable", ALICE)
    assert_reply(login(gw, ALICE, OLD), 235, "2.7.0")


def test_no_cache(make_gateway):
    gw = make_gateway({"auth_cache_size": "0"})
    for _ in range(2):
        assert_reply(login(gw, ALICE, "guess-1"), 535, "5.7.8")
    gw.wait_log(r"member=alice@example\.org result=fail "
                r"reason=\"bad password\"")
    assert len(fail_lines(gw, "bad password")) == 2
    assert fail_lines(gw, "bad password (cached)") == []
    assert_reply(login(gw, ALICE, OLD), 235, "2.7.0")
