"""Operations-view accounts: scrypt password hashes, TOTP codes (RFC 6238's own test vectors), the account
store's rules, and `citybrain accounts` (secrets shown once, never on the audit trail)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest
from typer.testing import CliRunner

from citybrain import access
from citybrain.access.accounts import (DATA_OFFICE, DEPARTMENT, AccountError, AccountStore, hash_password,
                                       verify_password)
from citybrain.access.totp import STEP_S, hotp, matching_step, new_secret, otpauth_uri, secret_bytes, totp
from citybrain.cli import app
from citybrain.ingest import audit
from citybrain.settings import ADMIN_USER, get_settings

#: RFC 6238 Appendix B: (Unix time, SHA-1, SHA-256, SHA-512 code), 8 digits, with the seeds below.
RFC6238 = [(59, "94287082", "46119246", "90693936"),
           (1111111109, "07081804", "68084774", "25091201"),
           (1111111111, "14050471", "67062674", "99943326"),
           (1234567890, "89005924", "91819424", "93441116"),
           (2000000000, "69279037", "90698825", "38618901"),
           (20000000000, "65353130", "77737706", "47863826")]
SEEDS = {"sha1": b"12345678901234567890", "sha256": b"12345678901234567890123456789012",
         "sha512": b"1234567890123456789012345678901234567890123456789012345678901234"}
#: RFC 4226 Appendix D: HOTP of the SHA-1 seed for counters 0..9, 6 digits.
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
DEPARTMENTS = ("data_bureau", "police", "water")


@pytest.mark.parametrize("at, sha1, sha256, sha512", RFC6238)
def test_totp_gives_rfc_6238s_test_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for digest, want in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        assert totp(SEEDS[digest], at, digits=8, digest=digest) == want, (at, digest)


def test_hotp_gives_rfc_4226s_test_vectors() -> None:
    assert [hotp(SEEDS["sha1"], counter) for counter in range(10)] == RFC4226


def test_a_code_is_good_one_step_either_side_of_now_and_no_further() -> None:
    secret, now = new_secret(), 1_796_000_015.0
    key, step = secret_bytes(secret), int(now // STEP_S)
    for offset in (-1, 0, 1):
        assert matching_step(secret, hotp(key, step + offset), now) == step + offset
    for offset in (-2, 2, 100):
        assert matching_step(secret, hotp(key, step + offset), now) is None
    assert matching_step(secret, "", now) is None and matching_step(secret, "12345a", now) is None
    assert matching_step(secret, f" {hotp(key, step)} ", now) == step   # spaces a person typed
    assert secret_bytes(secret.lower()) == key and len(key) == 20


def test_the_otpauth_uri_is_one_an_authenticator_app_reads() -> None:
    secret = new_secret()
    uri = urlparse(otpauth_uri(secret, "wang.li"))
    query = parse_qs(uri.query)
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/CityBrain:wang.li")
    assert query == {"secret": [secret], "issuer": ["CityBrain"], "algorithm": ["SHA1"], "digits": ["6"], "period": ["30"]}


def test_passwords_are_scrypt_hashes_with_their_own_salt_and_the_documented_cost() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2 ** 15), "8", "1") and len(salt) == 24 and len(key) == 44
    assert first != second                              # a salt per hash
    assert verify_password(first, "correct horse battery") and verify_password(second, "correct horse battery")
    assert not verify_password(first, "correct horse batterY") and not verify_password(first, "")
    with pytest.raises(AccountError, match="unknown password hash scheme 'md5'"):
        verify_password("md5$1$1$1$AA==$AA==", "x")


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AccountStore:
    from citybrain.access import accounts

    monkeypatch.setattr(accounts, "SCRYPT_N", 2 ** 4)   # the cost is the test above's; these test the rules
    return AccountStore(tmp_path / "access")


def test_the_store_keeps_hashes_not_passwords_owner_only_and_refuses_what_breaks_a_rule(store: AccountStore) -> None:
    account = store.add("wang.li", DEPARTMENT, "police", "wang-li-long-password", DEPARTMENTS)
    text = store.path.read_text()
    assert "wang-li-long-password" not in text and account.password_hash in text
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert AccountStore(store.path.parent).get("wang.li") == account   # another process reads what was written
    bad = [(("wang.li", DEPARTMENT, "police", "another-long-password"), "exists already"),
           ((ADMIN_USER, DATA_OFFICE, "data_bureau", "a-long-enough-one"), "people log in as themselves"),
           (("dept-police", DEPARTMENT, "police", "a-long-enough-one"), "people log in as themselves"),
           (("Wang Li", DEPARTMENT, "police", "a-long-enough-one"), "breaks the rule"),
           (("li.na", "admin", "police", "a-long-enough-one"), "role 'admin' is not one of"),
           (("li.na", DEPARTMENT, "fire_brigade", "a-long-enough-one"), "department 'fire_brigade' is not in"),
           (("li.na", DATA_OFFICE, "police", "a-long-enough-one"), "belongs to the data office"),
           (("li.na", DEPARTMENT, "police", "short"), "shorter than 12"),
           (("li.na.police", DEPARTMENT, "police", "LI.NA.POLICE"), "is the account's name")]
    for (name, role, department, password), complaint in bad:
        with pytest.raises(AccountError, match=complaint):
            store.add(name, role, department, password, DEPARTMENTS)
    assert list(store.accounts()) == ["wang.li"]
    with pytest.raises(AccountError, match="no account 'nobody'"):
        store.set_password("nobody", "a-long-enough-one")


def test_the_fingerprint_changes_with_every_secret_role_department_and_grant(store: AccountStore) -> None:
    account = store.add("wang.li", DEPARTMENT, "police", "wang-li-long-password", DEPARTMENTS)
    topics = ["dispatch.police.work_order.v1"]
    prints = {account.fingerprint(topics), account.fingerprint(topics + ["alert.sla.ticket.v1"]),
              store.set_password("wang.li", "another-long-password").fingerprint(topics),
              store.reset_totp("wang.li").fingerprint(topics),
              store.set_role("wang.li", DEPARTMENT, "water", DEPARTMENTS).fingerprint(topics),
              store.set_role("wang.li", DATA_OFFICE, "data_bureau", DEPARTMENTS).fingerprint(topics)}
    assert len(prints) == 6
    assert account.fingerprint(reversed(topics + ["a"])) == account.fingerprint(["a"] + topics)   # order-free


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CliRunner, list[dict[str, Any]]]]:
    """The command line on an empty state dir; the audit records it writes, in a list."""
    from citybrain.access import accounts

    for key in [k for k in os.environ if k.startswith("CITYBRAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(accounts, "SCRYPT_N", 2 ** 4)
    records: list[dict[str, Any]] = []
    monkeypatch.setattr(audit, "kafka_sink", lambda _settings, _trail: records.append)
    get_settings.cache_clear()
    yield CliRunner(), records
    get_settings.cache_clear()


def test_the_accounts_command_shows_secrets_once_and_puts_no_secret_on_the_audit_trail(cli) -> None:  # type: ignore[no-untyped-def]
    runner, records = cli
    opened = runner.invoke(app, ["accounts", "add", "wang.li", "--role", "department", "--department", "police", "--json"])
    assert opened.exit_code == 0, opened.output
    shown = json.loads(opened.stdout)
    secret = parse_qs(urlparse(shown["otpauth_uri"]).query)["secret"][0]
    store = AccountStore(get_settings().access_dir)
    account = store.get("wang.li")
    assert account is not None and account.totp_secret == secret and verify_password(account.password_hash, shown["password"])
    assert matching_step(secret, totp(secret_bytes(secret), time.time()), time.time()) is not None
    listed = runner.invoke(app, ["accounts", "list", "--json"])
    assert json.loads(listed.stdout)[0]["department"] == "police" and secret not in listed.stdout
    assert shown["password"] not in listed.stdout and "password_hash" not in listed.stdout
    own = runner.invoke(app, ["accounts", "passwd", "wang.li", "--password-stdin"], input="my-own-long-password\n")
    assert own.exit_code == 0 and "my-own-long-password" not in own.stdout
    assert verify_password(store.get("wang.li").password_hash, "my-own-long-password")   # type: ignore[union-attr]
    refused = runner.invoke(app, ["accounts", "add", "li.na", "--role", "data_office", "--department", "police"])
    assert refused.exit_code == 2 and "belongs to the data office" in refused.output
    unknown = runner.invoke(app, ["accounts", "set", "li.na", "--role", "department", "--department", "water"])
    assert unknown.exit_code == 2 and "no account 'li.na'" in unknown.output
    reset = runner.invoke(app, ["accounts", "reset-code", "wang.li"])
    assert reset.exit_code == 0 and "otpauth://totp/CityBrain:wang.li?secret=" in reset.stdout and secret not in reset.stdout
    assert runner.invoke(app, ["accounts", "remove", "wang.li"]).exit_code == 0
    assert store.accounts() == {}
    changes = [(r["action"], r["target"], r["details"]["change"]) for r in records]
    assert changes == [("account_change", "wang.li", "account opened"), ("account_change", "wang.li", "password set"),
                       ("account_change", "wang.li", "one-time code secret reset"),
                       ("account_change", "wang.li", "account closed")]
    assert not any(s in json.dumps(records) for s in (shown["password"], secret, "my-own-long-password"))


def test_the_demo_opens_a_data_office_person_and_a_duty_officer_per_department_once(tmp_path: Path, contracts,  # type: ignore[no-untyped-def]
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from citybrain.access import accounts
    from citybrain.devtools.accounts import demo_account, ensure_demo_accounts
    from citybrain.settings import load_settings

    monkeypatch.setattr(accounts, "SCRYPT_N", 2 ** 4)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    departments = access.load(access.ACCESS_FILE, contracts).departments.values()
    path, opened = ensure_demo_accounts(settings, departments)
    assert opened == len(departments) + 1 and oct(path.stat().st_mode & 0o777) == "0o600"
    office, police = demo_account(settings), demo_account(settings, "police")
    assert (office.name, office.role, office.department) == ("office.data", DATA_OFFICE, "data_bureau")
    store = AccountStore(settings.access_dir)
    assert verify_password(store.get(police.name).password_hash, police.password)   # type: ignore[union-attr]
    assert matching_step(police.totp_secret, police.code(), time.time()) is not None
    assert ensure_demo_accounts(settings, departments) == (path, 0)   # a second demo keeps them as they are
    assert demo_account(settings, "police") == police
    with pytest.raises(LookupError, match="no demo account 'duty.fire_brigade'"):
        demo_account(settings, "fire_brigade")
