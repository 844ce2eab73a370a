"""``python -m app db|users|keys|history ...``: the accounts database from the command line.

    python -m app db upgrade                      # migrate DATABASE_URL to this code's schema
    python -m app db current
    python -m app users create NAME [--admin] [--password-stdin]
    python -m app users list | disable NAME | enable NAME | set-password NAME [--password-stdin]
    python -m app keys create NAME [--label L] [--rpm N] [--chars-per-day N]   # prints the key once
    python -m app keys list | revoke ID
    python -m app history purge [--days N]        # the inference history's retention (HISTORY_DAYS)
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy import select

from .service import USER_NAME as _NAME


def _password(args) -> str | None:
    from .passwords import check_new
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            raise SystemExit("the passwords differ")
    else:
        return None
    check_new(pw)
    return pw


def _user(s, name):
    from .models import User
    user = s.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise SystemExit(f"no user {name!r}")
    return user


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m app", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="group", required=True)
    db = sub.add_parser("db").add_subparsers(dest="cmd", required=True)
    db.add_parser("upgrade")
    db.add_parser("current")
    users = sub.add_parser("users").add_subparsers(dest="cmd", required=True)
    p = users.add_parser("create")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--password-stdin", action="store_true")
    users.add_parser("list")
    for cmd in ("disable", "enable"):
        users.add_parser(cmd).add_argument("name")
    p = users.add_parser("set-password")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true")
    keys = sub.add_parser("keys").add_subparsers(dest="cmd", required=True)
    p = keys.add_parser("create")
    p.add_argument("name", help="the user the key belongs to")
    p.add_argument("--label", default="")
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--chars-per-day", type=int, help="translated characters per day")
    keys.add_parser("list")
    keys.add_parser("revoke").add_argument("id", type=int)
    hist = sub.add_parser("history").add_subparsers(dest="cmd", required=True)
    p = hist.add_parser("purge", help="delete inference records older than --days (default HISTORY_DAYS)")
    p.add_argument("--days", type=int)
    args = ap.parse_args(argv)

    from . import keys as keymod
    from .db import database_url, session
    from .models import ApiKey, User
    from .passwords import hash_password
    from .schema import current, ensure, head

    url = database_url()
    if args.group == "db" and args.cmd == "current":
        print(f"{current(url) or 'empty'} (this code: {head()})")
        return 0
    ensure(url)
    if args.group == "db":
        print(f"database at {head()}")
        return 0
    if args.group == "history":
        import os

        from ..config import SETTINGS_BY_NAME, effective_env, parse_setting
        from .history import purge
        days = args.days if args.days is not None else parse_setting(SETTINGS_BY_NAME["HISTORY_DAYS"], os.environ)
        if days < 1:
            raise SystemExit("--days must be at least 1")
        eff = effective_env(os.environ)
        n = purge(url, days, eff.get("HISTORY_DIR") or f"{eff['RUN_DIR']}/history")
        print(f"deleted {n} inference records older than {days} days")
        return 0
    with session(url) as s:
        if args.group == "users":
            if args.cmd == "create":
                if not _NAME.fullmatch(args.name):
                    raise SystemExit("a user name is 1-64 letters, digits, _ . @ - (starting with a letter or digit)")
                if s.execute(select(User).where(User.name == args.name)).first():
                    raise SystemExit(f"user {args.name!r} exists")
                pw = _password(args)
                s.add(User(name=args.name, is_admin=args.admin, password_hash=hash_password(pw) if pw else None))
                print(f"created user {args.name}{' (admin)' if args.admin else ''}"
                      f"{'' if pw else ' without a password (API keys only)'}")
            elif args.cmd == "list":
                for u in s.execute(select(User).order_by(User.id)).scalars():
                    print(json.dumps({"name": u.name, "admin": u.is_admin, "disabled": u.disabled,
                                      "password": u.password_hash is not None,
                                      "created_at": u.created_at.isoformat()}))
            elif args.cmd in ("disable", "enable"):
                _user(s, args.name).disabled = args.cmd == "disable"
                print(f"user {args.name} {args.cmd}d")
            elif args.cmd == "set-password":
                user = _user(s, args.name)
                pw = _password(args)
                if pw is None:
                    raise SystemExit("no password given (--password-stdin, or run it in a terminal)")
                user.password_hash = hash_password(pw)
                print(f"password of {args.name} set")
        else:
            if args.cmd == "create":
                for name in ("rpm", "chars_per_day"):
                    if getattr(args, name) is not None and getattr(args, name) < 1:
                        raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
                row, key = keymod.create(s, _user(s, args.name), args.label, args.rpm, args.chars_per_day)
                print(key)
                print(f"key {row.id} ({row.prefix}...) for {args.name}: shown once, store it now", file=sys.stderr)
            elif args.cmd == "list":
                rows = s.execute(select(ApiKey, User.name).join(User, ApiKey.user_id == User.id).order_by(ApiKey.id))
                for k, owner in rows:
                    print(json.dumps({"id": k.id, "user": owner, "label": k.label, "prefix": k.prefix,
                                      "rpm": k.rpm, "chars_per_day": k.chars_per_day,
                                      "created_at": k.created_at.isoformat(),
                                      "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}))
            elif args.cmd == "revoke":
                if not keymod.revoke(s, args.id):
                    raise SystemExit(f"no live key {args.id}")
                print(f"key {args.id} revoked")
    return 0
