"""`citybrain accounts ...`: the people who log in to the operations view (password and one-time code each)."""

from __future__ import annotations

import json
import secrets
import sys

import typer
from rich.table import Table

from citybrain.cli.base import audit, current_contracts, current_settings, fail_with, group, json_option, out

accounts_app = group("accounts", "Operations-view accounts: one per person, with a role, a department, a password "
                                 "and a one-time code (TOTP).")

ROLE_HELP = "data_office (the data office's pages; department data_bureau) or department (a department's duty officer)."
STDIN_HELP = "Read the password from the first line of standard input instead of generating one."


def _departments() -> list[str]:
    """The departments the deployment's access model declares (a person's remit is their department's grants)."""
    from citybrain.access import AccessError, load

    try:
        return sorted(load(current_settings().access_file, current_contracts()).departments.values())
    except AccessError as exc:
        raise fail_with(exc) from None


def _store():  # type: ignore[no-untyped-def]
    from citybrain.access.accounts import AccountStore

    return AccountStore(current_settings().access_dir)


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(the password, whether it was generated and must be printed)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return secrets.token_urlsafe(15), True


def _print_secrets(name: str, note: str, as_json: bool, password: str | None = None, secret: str | None = None) -> None:
    """What a person needs to log in, shown this once: the generated password, the code secret as an otpauth:// URI."""
    from citybrain.access.totp import otpauth_uri

    uri = otpauth_uri(secret, name) if secret else None
    if as_json:
        out.print_json(json.dumps({"account": name, "note": note} | ({"password": password} if password else {})
                                  | ({"otpauth_uri": uri} if uri else {})))
        return
    out.print(note, highlight=False)
    if password:
        out.print(f"password (shown once): {password}", highlight=False)
    if uri:
        out.print(f"one-time code secret of {name} (shown once; add it to the person's authenticator app):",
                  highlight=False)
        out.print(f"  {uri}", highlight=False, soft_wrap=True)


@accounts_app.command("add")
def add_cmd(name: str = typer.Argument(..., help="The person's account name, e.g. wang.li."),
            role: str = typer.Option(..., help=ROLE_HELP),
            department: str = typer.Option(..., help="The person's department (e.g. police): their remit in the view."),
            password_stdin: bool = typer.Option(False, "--password-stdin", help=STDIN_HELP),
            as_json: bool = json_option("The account, its generated password and otpauth:// URI as JSON.")) -> None:
    """Open an account: prints the generated password and the one-time code secret (otpauth:// URI) once."""
    from citybrain.access.accounts import AccountError

    departments = _departments()
    password, generated = _password(password_stdin)
    try:
        account = _store().add(name, role, department, password, departments)
    except AccountError as exc:
        raise fail_with(exc) from None
    audit("account_change", name, change="account opened", role=role, department=department)
    _print_secrets(name, f"account {name} opened: role {role}, department {department}", as_json,
                   password if generated else None, account.totp_secret)


@accounts_app.command("list")
def list_cmd(as_json: bool = json_option()) -> None:
    """Every account: name, role, department, when opened and last changed (never a secret)."""
    rows = [a.public() for a in _store().accounts().values()]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("account", "role", "department", "opened", "changed")
    for row in rows:
        table.add_row(row["name"], row["role"], row["department"], row["created_at"], row["changed_at"])
    out.print(table)


@accounts_app.command("passwd")
def passwd_cmd(name: str = typer.Argument(..., help="The account."),
               password_stdin: bool = typer.Option(False, "--password-stdin", help=STDIN_HELP),
               as_json: bool = json_option("The generated password as JSON.")) -> None:
    """Set a new password (generated unless --password-stdin); the account's sessions end."""
    from citybrain.access.accounts import AccountError

    password, generated = _password(password_stdin)
    try:
        _store().set_password(name, password)
    except AccountError as exc:
        raise fail_with(exc) from None
    audit("account_change", name, change="password set")
    _print_secrets(name, f"{name}: new password set; their sessions in the view have ended", as_json,
                   password if generated else None)


@accounts_app.command("reset-code")
def reset_code_cmd(name: str = typer.Argument(..., help="The account."),
                   as_json: bool = json_option("The new otpauth:// URI as JSON.")) -> None:
    """A new one-time code secret (a lost or new phone): the old codes stop working, the account's sessions end."""
    from citybrain.access.accounts import AccountError

    try:
        account = _store().reset_totp(name)
    except AccountError as exc:
        raise fail_with(exc) from None
    audit("account_change", name, change="one-time code secret reset")
    _print_secrets(name, f"{name}: new one-time code secret; the old codes and their sessions have ended", as_json,
                   secret=account.totp_secret)


@accounts_app.command("set")
def set_cmd(name: str = typer.Argument(..., help="The account."),
            role: str = typer.Option(..., help=ROLE_HELP),
            department: str = typer.Option(..., help="The person's department.")) -> None:
    """Change a person's role or department; their sessions end."""
    from citybrain.access.accounts import AccountError

    departments = _departments()
    try:
        _store().set_role(name, role, department, departments)
    except AccountError as exc:
        raise fail_with(exc) from None
    audit("account_change", name, change="role set", role=role, department=department)
    out.print(f"{name}: role {role}, department {department}; their sessions in the view have ended", highlight=False)


@accounts_app.command("remove")
def remove_cmd(name: str = typer.Argument(..., help="The account.")) -> None:
    """Close an account: the person can no longer log in, their sessions end."""
    from citybrain.access.accounts import AccountError

    try:
        _store().remove(name)
    except AccountError as exc:
        raise fail_with(exc) from None
    audit("account_change", name, change="account closed")
    out.print(f"account {name} closed", highlight=False)
