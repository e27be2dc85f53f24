"""Which part of StayHuman owns which table, and who may read it.

One owner writes a table; every other part reads it only along a read path
listed here, never writes it. A test (`tests/unit/test_table_ownership.py`)
reads the source of each part and fails on a write to a table it does not own,
or a read path that is not listed, so this page stays true.

The owners:
- `configuration`: `stayhuman apply`, the only writer of what people configure, and of the
  file (secrets redacted) each tenant's configuration version came from.
- `router`: conversations, their interactions, continuity, and what it applied.
- `notify`: its copy of each deadline, alerts, deliveries, push subscriptions.
- `ingest`: the state of its pollers.
- `outbound`: the replies people write in the inbox, and the reply tokens it refreshed.
- `api`: sign-in (logins, sessions, set-password links, throttles), the conversation
  timeline and the outcome of each command, both fed by its consumer of the events.
"""

from typing import Literal

Part = Literal["configuration", "router", "notify", "ingest", "api", "outbound"]

OWNER: dict[str, Part] = {
    "tenant": "configuration",
    "person": "configuration",
    "team": "configuration",
    "teammember": "configuration",
    "topic": "configuration",
    "slapolicy": "configuration",
    "calendar": "configuration",
    "account": "configuration",
    "apitoken": "configuration",
    "conversation": "router",
    "interaction": "router",
    "continuity": "router",
    "processedcommand": "router",
    "outboxbatch": "router",
    "deadline": "notify",
    "alert": "notify",
    "delivery": "notify",
    "pushsubscription": "notify",
    "pushlink": "notify",
    "notifyoutbox": "notify",
    "pollstate": "ingest",
    "rolegrant": "configuration",
    "appliedconfiguration": "configuration",
    "login": "api",
    "websession": "api",
    "passwordlink": "api",
    "loginthrottle": "api",
    "timeline": "api",
    "commandoutcome": "api",
    "reply": "outbound",
    "replytoken": "outbound",
}

# Writes to a table another part owns, each for a reason that keeps one writer per column.
SHARED_WRITES: dict[tuple[Part, str], str] = {
    ("router", "person"): "the router's own columns of a person: load, last_assigned_at and status "
    "(set by its SetStatus command); the configuration writes every other column",
    ("configuration", "outboxbatch"): "apply queues the commands its changes need (hand over, check "
    "availability, recompute) in the same transaction; the router's relay publishes them",
    ("configuration", "pollstate"): "removing an account with --prune removes its poll state with it",
    ("configuration", "continuity"): "removing an account with --prune removes its continuity with it",
    ("api", "apitoken"): "tokens made and revoked in the API (source api); apply writes and prunes only "
    "the tokens of the configuration file (source config), and stamps neither's last use",
    ("configuration", "login"): "`stayhuman invite` and `up --demo` set a person's first password "
    "or unlock them, as an operator at the command line",
    ("configuration", "passwordlink"): "`stayhuman invite` makes a set-password link for a person",
}

# Reads of a table another part owns (the read paths).
READS: dict[Part, frozenset[str]] = {
    "router": frozenset(
        {"tenant", "person", "team", "teammember", "topic", "slapolicy", "calendar", "account"}
    ),
    "notify": frozenset(
        {
            "tenant",  # escalation chain, manager
            "person",  # names, addresses, channels, quiet hours
            "team",  # leads
            "teammember",
            "topic",  # a topic's own escalation chain
            "account",  # the brand handle an alert names
            "conversation",  # what an alert is about: owner, platform, author, link
            "interaction",  # the customer's words an alert quotes
        }
    ),
    # Accounts and tokens to verify deliveries; interactions counted per account to spot silence.
    "ingest": frozenset({"tenant", "account", "apitoken", "interaction"}),
    # The command line: checks before a command is sent, listings.
    "configuration": frozenset(OWNER),
    # The inbox API: what people see, and the checks before a command is sent.
    "api": frozenset(
        {
            "tenant",
            "person",
            "team",
            "teammember",
            "topic",
            "slapolicy",
            "calendar",
            "account",
            "apitoken",
            "rolegrant",
            "appliedconfiguration",  # the configuration file each tenant's version came from
            "conversation",
            "interaction",
            "deadline",
            "alert",
            "delivery",
            "reply",  # the replies of a conversation and what became of them
            "replytoken",  # whether an account's reply connection is failing
        }
    ),
    # Who may send (a live session), what a reply answers and where, the credentials to post it;
    # the interactions of a thread to see whether a reply whose answer was lost went out.
    "outbound": frozenset({"person", "account", "conversation", "interaction", "websession"}),
}

# Columns of `person` that only the router writes.
ROUTER_PERSON_COLUMNS = frozenset({"load", "last_assigned_at", "status"})
