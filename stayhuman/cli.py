"""The `stayhuman` command."""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.commands import PersonStatus
from shared.secrets import SecretKeyError
from shared.settings import CommonSettings, SettingsError, load_settings
from stayhuman.database import DatabaseNotReady


def _fail(message: str, code: int = 2) -> int:
    print(f"stayhuman: error: {message}", file=sys.stderr)
    return code


def _readable_database(settings: CommonSettings) -> str:
    """The database URL of a command that reads: it must exist and be migrated (never created)."""
    from stayhuman.database import check_schema

    check_schema(settings.sqlalchemy_url)
    return settings.sqlalchemy_url


def cmd_up(args: argparse.Namespace) -> int:
    from stayhuman.database import check_reachable
    from stayhuman.supervisor import UpSettings, run_up

    if args.routers < 1:
        return _fail("--routers must be at least 1")
    settings = load_settings(UpSettings)
    check_reachable(settings.sqlalchemy_url)
    return run_up(settings, routers=args.routers, demo=args.demo)


def cmd_service(args: argparse.Namespace) -> int:
    from shared.jetstream import ServerTooOld
    from stayhuman.database import check_schema
    from stayhuman.serve import ListenerUnavailable, serve

    def database_ready(settings: CommonSettings) -> None:
        try:
            check_schema(settings.sqlalchemy_url)
        except DatabaseNotReady as error:
            if error.code != 1:
                raise
            # Unreachable now: the service starts anyway, not ready until the database answers.

    try:
        serve(args.command, check=database_ready)
    except (ServerTooOld, ListenerUnavailable) as error:
        return _fail(str(error))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from stayhuman.bench.main import run

    return run(args)


def cmd_migrate(_args: argparse.Namespace) -> int:
    from shared.db.migrate import current_revision_sync
    from stayhuman.database import migrate, reaching

    url = load_settings(CommonSettings).sqlalchemy_url
    migrate(url)
    with reaching(url):
        print(f"database schema at revision {current_revision_sync(url)}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from shared.db.session import create_engine, session_factory, sqlite_path
    from stayhuman.config import ConfigError, apply_config, cross_check, load_config
    from stayhuman.database import check_schema, exists, is_local_default, migrate, reaching

    settings = load_settings(CommonSettings)
    url = settings.sqlalchemy_url
    try:
        document = load_config(Path(args.file))
        if is_local_default(settings) and not exists(url):
            # A new state folder: the whole file is checked before the database is made,
            # so a refused file leaves nothing behind.
            cross_check(document, source=args.file, known_people=set())
    except ConfigError as error:
        return _fail(f"{args.file} is invalid, nothing was applied:\n" + str(error))
    if is_local_default(settings):
        created = not exists(url)
        migrate(url)  # the state folder's own SQLite file, as `up` would
        if created:
            print(f"created the database {sqlite_path(url)}")
    else:
        check_schema(url)

    async def run() -> str:
        engine = create_engine(settings.sqlalchemy_url)
        try:
            summary = await apply_config(
                session_factory(engine),
                document,
                source=args.file,
                prune=args.prune,
                recompute=args.recompute,
            )
            return str(summary)
        finally:
            await engine.dispose()

    try:
        with reaching(url):
            summary = asyncio.run(run())
    except ConfigError as error:
        return _fail(f"{args.file} is invalid, nothing was applied:\n" + str(error))
    print(f"applied {args.file}: {summary}")
    return 0


def cmd_conversations(args: argparse.Namespace) -> int:
    from stayhuman.database import reaching
    from stayhuman.inspect import list_conversations, render_table, rfc3339

    if args.limit < 1:
        return _fail("--limit must be 1 or more")
    settings = load_settings(CommonSettings)
    url = _readable_database(settings)
    with reaching(url):
        rows = asyncio.run(
            list_conversations(url, tenant=args.tenant, state=args.state, limit=args.limit + 1)
        )
    more, rows = len(rows) > args.limit, rows[: args.limit]
    if args.json:
        print(json.dumps(rows, default=rfc3339, indent=2))
    else:
        print(render_table(rows, more=more))
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    from stayhuman.database import reaching
    from stayhuman.inspect import list_accounts, render_accounts, rfc3339

    settings = load_settings(CommonSettings)
    url = _readable_database(settings)
    with reaching(url):
        rows = asyncio.run(list_accounts(url, tenant=args.tenant))
    print(json.dumps(rows, default=rfc3339, indent=2) if args.json else render_accounts(rows))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    from stayhuman.control import ControlError, Request, send

    settings = load_settings(CommonSettings)
    _readable_database(settings)
    request = Request(
        action=args.action,
        conversation=getattr(args, "conversation", None),
        person=getattr(args, "person", None) or getattr(args, "to", None),
        team=getattr(args, "team", None),
        status=PersonStatus(args.status) if args.action == "status" else None,
        reason=getattr(args, "reason", None) or "",
        issued_by=args.by,
        command_id=args.command_id,
    )
    try:
        sent = asyncio.run(send(settings, request, wait=args.wait))
    except ControlError as error:
        return _fail(str(error), error.code)
    if args.json:
        shown = {"command": sent.command.model_dump(mode="json")}
        if sent.outcome is not None:
            shown["outcome"] = sent.outcome.model_dump(mode="json")
        print(json.dumps(shown["command"] if args.wait is None else shown, indent=2))
    else:
        print(sent.describe())
    return 2 if sent.rejected else 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from stayhuman.control import ControlError
    from stayhuman.deadletters import list_dead_letters, render_table

    if args.limit < 0:
        return _fail("--limit must be 0 or more")
    settings = load_settings(CommonSettings)
    try:
        found, total = asyncio.run(
            list_dead_letters(settings, stream=args.stream, consumer=args.consumer, limit=args.limit)
        )
    except ControlError as error:
        return _fail(str(error), error.code)
    if args.json:
        print(json.dumps([entry.as_json() for entry in found], indent=2))
    else:
        print(render_table(found, total=total))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from stayhuman.control import ControlError
    from stayhuman.deadletters import Replayed, replay_dead_letters

    if args.seqs and (args.stream or args.consumer):
        return _fail(
            "--stream and --consumer choose the entries of --all; give either sequence numbers or --all"
        )
    settings = load_settings(CommonSettings)

    def report(outcome: Replayed) -> None:
        if outcome.ok:
            print(outcome.describe(), flush=True)
        else:
            _fail(outcome.describe())

    try:
        done = asyncio.run(
            replay_dead_letters(
                settings,
                seqs=args.seqs,
                every=args.all,
                stream=args.stream,
                consumer=args.consumer,
                report=report,
            )
        )
    except ControlError as error:
        return _fail(str(error), error.code)
    if args.all and not done:
        print("no dead letters to replay")
    return 0 if all(outcome.ok for outcome in done) else 1


def cmd_push_link(args: argparse.Namespace) -> int:
    from services.notify.main import public_url
    from services.notify.push import link_generations, push_link
    from services.notify.settings import NotifySettings
    from shared.preflight import Refused, check_person
    from stayhuman.control import ControlError, database_session

    settings = load_settings(NotifySettings)
    _readable_database(settings)

    signer = settings.link_signer(settings.secret_box())

    async def generation() -> int:
        async with database_session(settings.sqlalchemy_url) as session:
            await check_person(session=session, person_id=args.person)
            return (await link_generations(session=session, people=[args.person]))[args.person]

    try:
        current = asyncio.run(generation())
    except ControlError as error:
        return _fail(str(error), error.code)
    except Refused as error:
        return _fail(str(error))
    print(push_link(signer, public_url(settings), args.person, current))
    return 0


def cmd_push_revoke(args: argparse.Namespace) -> int:
    from services.notify.push import revoke_push_links
    from services.notify.settings import NotifySettings
    from shared.db.models import PersonRow
    from stayhuman.control import ControlError, database_session

    settings = load_settings(NotifySettings)
    _readable_database(settings)

    async def revoke() -> int:
        async with database_session(settings.sqlalchemy_url) as session:
            if await session.get(PersonRow, args.person) is None:
                raise ControlError(f"no person {args.person!r}")
            removed = await revoke_push_links(session=session, person_id=args.person)
            await session.commit()
            return removed

    try:
        removed = asyncio.run(revoke())
    except ControlError as error:
        return _fail(str(error), error.code)
    devices = "1 device" if removed == 1 else f"{removed} devices"
    print(
        f"revoked every push link issued to {args.person} so far and removed the {devices} registered "
        f"through them; `stayhuman push-link {args.person}` makes a new link"
    )
    return 0


def cmd_secret_key(_args: argparse.Namespace) -> int:
    from shared.secrets import new_key

    print(new_key())
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from services.api.settings import ApiSettings
    from stayhuman.control import ControlError
    from stayhuman.database import reaching
    from stayhuman.invite import InviteError, invite

    settings = load_settings(ApiSettings)
    url = _readable_database(settings)
    try:
        with reaching(url):
            link = asyncio.run(
                invite(
                    url,
                    args.person,
                    public_url=settings.public_url(),
                    lifetime=settings.password_link_lifetime,
                )
            )
    except ControlError as error:
        return _fail(str(error), error.code)
    except InviteError as error:
        return _fail(str(error))
    print(link)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stayhuman.bench.options import add_arguments as bench_options
    from stayhuman.inspect import DEFAULT_LIMIT

    parser = argparse.ArgumentParser(
        prog="stayhuman", description="Every social media interaction reaches the right human, on time."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start NATS (unless configured), migrate, run all services")
    up.add_argument(
        "--routers",
        type=int,
        default=1,
        help="router processes (on SQLite they take turns with each routing transaction)",
    )
    up.add_argument("--demo", action="store_true", help="apply the demo configuration first")
    up.set_defaults(func=cmd_up)
    for name, text in (
        ("ingest", "run the ingest service (webhooks in, interactions to NATS)"),
        ("router", "run the router service (conversations, owners, deadlines)"),
        ("notify", "run the notify service (timers and alerts)"),
        ("api", "run the api service (the inbox's HTTP API, sign-in, the conversation timeline)"),
        ("outbound", "run the outbound service (replies from the inbox, posted to the platforms)"),
    ):
        commands.add_parser(name, help=text).set_defaults(func=cmd_service)
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=cmd_migrate)
    bench = commands.add_parser(
        "bench", help="measure throughput and latency on this machine, beside raw JetStream (starts its own)"
    )
    bench_options(bench)
    bench.set_defaults(func=cmd_bench)
    apply = commands.add_parser(
        "apply", help="create or update people, tenants, accounts, teams, SLA policies, calendars and topics"
    )
    apply.add_argument("-f", "--file", required=True, help="configuration YAML file")
    apply.add_argument(
        "--prune",
        action="store_true",
        help="also remove what the file's tenants no longer have (topics, calendars, SLA policies, "
        "teams, API tokens, unused accounts); people stay (set active: false)",
    )
    apply.add_argument(
        "--recompute",
        action="store_true",
        help="recompute the open deadlines of the file's tenants under their SLA policies now "
        "(otherwise a changed SLA applies to new deadlines only)",
    )
    apply.set_defaults(func=cmd_apply)
    accounts = commands.add_parser("accounts", help="connected accounts and the health of their connectors")
    accounts.add_argument("--tenant", help="only this tenant")
    accounts.add_argument("--json", action="store_true", help="JSON instead of a table")
    accounts.set_defaults(func=cmd_accounts)
    commands.add_parser(
        "secret-key", help="print a new key for STAYHUMAN_SECRET_KEY (encrypts stored secrets)"
    ).set_defaults(func=cmd_secret_key)
    conversations = commands.add_parser(
        "conversations",
        help="list conversations with owner, state, deadline and why, newest first",
        description="The newest conversations first (by when they opened), times in UTC.",
    )
    conversations.add_argument("--tenant", help="only this tenant")
    conversations.add_argument(
        "--state", choices=["open", "paused", "responded", "resolved"], help="only this state"
    )
    conversations.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, metavar="N", help=f"at most N (default: {DEFAULT_LIMIT})"
    )
    conversations.add_argument("--json", action="store_true", help="JSON instead of a table")
    conversations.set_defaults(func=cmd_conversations)
    _add_control_commands(commands)
    _add_dead_letter_commands(commands)
    push = commands.add_parser(
        "push-link", help="print a person's link for registering a device for Web Push alerts"
    )
    push.add_argument("person", metavar="PERSON", help="a person id, as in the configuration")
    push.set_defaults(func=cmd_push_link)
    invite_parser = commands.add_parser(
        "invite",
        help="print a link with which a person sets their password for the inbox (works once)",
        description="Print a set-password link for an active person, to hand to them. It works once, "
        "until STAYHUMAN_PASSWORD_LINK_LIFETIME (24h) has passed; setting the password ends the "
        "person's sessions and lifts a sign-in lock. Links are built on STAYHUMAN_API_PUBLIC_URL.",
    )
    invite_parser.add_argument("person", metavar="PERSON", help="a person id, as in the configuration")
    invite_parser.set_defaults(func=cmd_invite)
    links = commands.add_parser("push", help="manage people's push links")
    link_actions = links.add_subparsers(dest="action", required=True, metavar="ACTION")
    revoke = link_actions.add_parser(
        "revoke",
        help="end every push link issued to a person so far and remove the devices registered through them",
    )
    revoke.add_argument("person", metavar="PERSON", help="a person id, as in the configuration")
    revoke.set_defaults(func=cmd_push_revoke)
    return parser


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 600")
    return value


def _sequence(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number (as `dead-letters` lists them)")
    return int(text)


def _add_dead_letter_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """`dead-letters` lists SH_DEADLETTER; `dead-letters replay` publishes entries again."""

    def add_filters(parser: argparse.ArgumentParser, default: object) -> None:
        parser.add_argument(
            "--stream",
            metavar="STREAM",
            default=default,
            help="only what came from this stream, e.g. SH_EVENTS",
        )
        parser.add_argument(
            "--consumer", metavar="CONSUMER", default=default, help="only what this consumer gave up on"
        )

    dead = commands.add_parser(
        "dead-letters",
        help="list what the services could not process (SH_DEADLETTER); `dead-letters replay` retries it",
        usage="%(prog)s [--stream STREAM] [--consumer CONSUMER] [--json] [--limit N]\n"
        "       %(prog)s replay (SEQ [SEQ ...] | --all) [--stream STREAM] [--consumer CONSUMER]",
        description="List the dead letters, oldest first, without consuming them. "
        "`stayhuman dead-letters replay` publishes entries again on their original subjects.",
    )
    add_filters(dead, None)
    dead.add_argument("--json", action="store_true", help="JSON instead of a table")
    dead.add_argument(
        "--limit", type=int, default=100, metavar="N", help="list at most this many (default: 100)"
    )
    dead.set_defaults(func=cmd_dead_letters)
    actions = dead.add_subparsers(
        dest="action",
        title="actions",
        description="without one, the dead letters are listed",
        metavar="ACTION",
    )
    replay = actions.add_parser(
        "replay",
        help="publish entries again on their original subjects, then remove them",
        prog="stayhuman dead-letters replay",
        usage="%(prog)s (SEQ [SEQ ...] | --all) [--stream STREAM] [--consumer CONSUMER]",
        description="Publish each entry's body again on its original subject (with its application "
        "headers), wait for JetStream to store it, then remove the entry from SH_DEADLETTER. "
        "Replaying the same entry again within 2 minutes stores it once.",
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "seqs", nargs="*", type=_sequence, default=[], metavar="SEQ", help="sequence numbers, as listed"
    )
    which.add_argument("--all", action="store_true", help="every entry (of --stream / --consumer)")
    # SUPPRESS: given before `replay`, the filters stay as the list parser read them.
    add_filters(replay, argparse.SUPPRESS)
    replay.set_defaults(func=cmd_replay)


def _add_control_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """People's commands (the router's, and notify's acknowledge): checked against the database,
    sent over NATS (SH_COMMANDS)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--by", default="operator", metavar="WHO", help="who asks (default: operator)")
    common.add_argument("--json", action="store_true", help="print the command sent as JSON")
    common.add_argument(
        "--wait",
        type=_seconds_arg,
        metavar="SECONDS",
        help="also wait (at most SECONDS) for the outcome: applied, or rejected with its reason (exit 2)",
    )
    common.add_argument(
        "--command-id",
        metavar="ID",
        help="id of the command (default: a new one); sending again with the same id stores it once",
    )
    conversation_help = "conversation id, or a unique prefix of at least 6 characters"
    reason_help = "why, for the record (up to 200 characters)"

    def add(name: str, text: str, *, action: str | None = None) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=text, parents=[common])
        parser.set_defaults(func=cmd_control, action=action or name)
        if name != "status":
            parser.add_argument("conversation", metavar="CONVERSATION", help=conversation_help)
        return parser

    status = add("status", "say whether a person takes work now")
    status.add_argument("person", metavar="PERSON", help="a person id, as in the configuration")
    status.add_argument("status", choices=[s.value for s in PersonStatus])
    add("claim", "take a conversation for a person").add_argument(
        "--person", required=True, metavar="PERSON", help="who takes it"
    )
    reassign = add("reassign", "give a conversation to a person, or back to a team's queue")
    target = reassign.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="PERSON", help="the new owner")
    target.add_argument("--team", metavar="TEAM", help="a team of the conversation's tenant")
    reassign.add_argument("--reason", metavar="TEXT", default="", help=reason_help)
    add("pause", "stop the SLA clock while waiting on the customer").add_argument(
        "--reason", metavar="TEXT", default="", help=reason_help
    )
    add("resume", "restart the SLA clock of a paused conversation")
    add("resolve", "close a conversation: nothing is left to answer").add_argument(
        "--reason", metavar="TEXT", default="", help=reason_help
    )
    responded = add(
        "mark-responded",
        "say the brand answered where StayHuman does not watch (a call, the platform's own app): "
        "the clock stops as for a reply",
        action="respond",
    )
    responded.add_argument(
        "--person",
        metavar="PERSON",
        help="who answered: the author goes to them next time (default: the owner)",
    )
    responded.add_argument(
        "--note", dest="reason", metavar="TEXT", default="", help="how, for the record (up to 200 characters)"
    )
    add(
        "acknowledge", "say a person is on it: the escalation of the conversation's running deadline stops"
    ).add_argument("--person", required=True, metavar="PERSON", help="who is on it")


def main(argv: Sequence[str] | None = None) -> int:
    # The state folder, the SQLite database and the keys hold every tenant's messages and
    # secrets: what any command (and `up`'s children) creates is readable by its owner only.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, SecretKeyError) as error:
        return _fail(str(error))
    except DatabaseNotReady as error:
        return _fail(str(error), error.code)
    except KeyboardInterrupt:
        return 130
