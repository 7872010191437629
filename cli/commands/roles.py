"""``scanatlas roles``: the roles table and the audit log, from the server's shell.

This is how the first admin is made when the identity provider sends no role claim: whoever can
run commands on the server owns its files, so the command line acts as an admin (recorded in
the audit log as ``cli:<os user>``).
"""

from __future__ import annotations

import argparse

from core.auth import NO_ROLE, ROLES, AccessStore, local_user


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "roles",
        help="list or set who has which role; show the audit log",
        description="Manage the roles table in the label database (SCANATLAS_DB_URL or the SQLite "
        "file under the cache). A role in the sign-in claim wins over this table.",
    )
    actions = parser.add_subparsers(dest="roles_action", metavar="ACTION", required=True)
    actions.add_parser("list", help="print the roles table")
    grant = actions.add_parser("set", help="give EMAIL a ROLE (or 'none' to remove it)")
    grant.add_argument("email")
    grant.add_argument("role", choices=[*ROLES, NO_ROLE])
    audit = actions.add_parser("audit", help="print the newest audit events")
    audit.add_argument("--limit", type=int, default=50)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with AccessStore() as store:
        if args.roles_action == "set":
            store.set_role(args.email, args.role, actor=local_user(source="cli"))
            print(f"{args.email.strip().lower()}: {args.role}")
        elif args.roles_action == "list":
            roles = store.roles()
            print(roles.to_string(index=False) if len(roles) else "the roles table is empty")
        else:
            events = store.events(limit=args.limit)
            print(events.to_string(index=False) if len(events) else "no audit events yet")
    return 0
