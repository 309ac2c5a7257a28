"""``firebox console ...``: helpers for the console's configuration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

console_cli = typer.Typer(help="The call-taker's console: configuration helpers.", no_args_is_help=True)


@console_cli.command("hash-password")
def hash_password_cmd(
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from standard input (one line).")] = False,
) -> None:
    """Print the scrypt hash of a password, for a user's ``password_hash`` in the
    deployment file. Asks twice (hidden) unless --stdin."""
    from firebox.console.auth import AuthError, hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        typer.echo(hash_password(password))
    except AuthError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
