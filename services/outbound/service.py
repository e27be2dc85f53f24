"""Sending a reply a person wrote: at most once, never silently lost.

`Outbound.handle` takes one `SendReply` (a delivery of it: the first or a redelivery) and
returns what to publish and whether to try again later. Its steps:

1. A reply already settled (sent, failed, in doubt) only has its outcome published again.
2. A new reply is checked: a live session of the person it names, the conversation in the
   command's tenant, credentials for the account, and the platform's rules now
   (`shared.reply_rules.choose`: the window may have closed since the page showed it). It is
   then recorded, with the key the platform dedupes on, before anything is posted.
3. Before each post the attempt is recorded (`started_at`). A reply found with an attempt
   recorded and no answer (the service died, or the answer was lost) is posted again only where
   that is safe: on a platform that dedupes on our key (Mastodon, Bluesky, the webhook), or once
   the thread (or the platform's echo, already stored) shows it did not go out. When that cannot
   be told it is "in doubt" and a person checks on the platform: never posted twice.
4. Sent: the reply becomes an outbound interaction attributed to its writer (the router marks the
   conversation responded and credits them), a `ReplyEvent` and the command's outcome.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.outbound import decisions
from services.outbound.decisions import Next, Seen
from services.outbound.platforms import wire
from services.outbound.platforms.base import (
    Credentials,
    CredentialsFailed,
    Lost,
    PlatformClient,
    Posted,
    Refused,
    Target,
    Unreadable,
)
from services.outbound.platforms.base import (
    Outgoing as Post,
)
from services.outbound.ports import Answered, ReplyStore
from services.outbound.store import credentials_json
from shared import reply_rules, subjects
from shared.commands import ReplyMethod, SendReply
from shared.db.models import ReplyRow
from shared.events import (
    Author,
    CommandApplied,
    CommandRejected,
    ConnectorProblem,
    Direction,
    InteractionReceived,
    Kind,
    Platform,
    Rejection,
    ReplyEvent,
    ReplyState,
    utcnow,
)
from shared.ids import interaction_id
from shared.messages import Outgoing
from shared.secrets import SecretBox

log = logging.getLogger(__name__)

SETTLED = (ReplyState.sent, ReplyState.failed, ReplyState.in_doubt)


@dataclass
class Handled:
    """What one delivery of a command came to: messages to publish (before the ack), and
    `retry_in` seconds when it should be delivered again (nothing went out yet)."""

    messages: list[Outgoing] = field(default_factory=list)
    retry_in: float | None = None


@dataclass
class Policy:
    retry_delay: float = 15.0
    settle: float = 5.0  # seconds before reading a thread for a post whose answer was lost
    youtube_reply_units: int | None = None  # the daily units replies may take; None: not counted


@dataclass
class Outbound:
    store: ReplyStore
    box: SecretBox
    clients: Callable[[Platform], PlatformClient]
    policy: Policy = field(default_factory=Policy)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def handle(self, command: SendReply, *, now: datetime, last_delivery: bool) -> Handled:
        row = await self.store.get(command.command_id)
        if row is None:
            checked = await self._check(command, now)
            if isinstance(checked, Handled):
                return checked
            row = await self.store.record(checked)
            if row.state not in SETTLED and row.attempts == 0:
                return await self._send(command, row, now=now, last_delivery=last_delivery,
                                        first=[self._event(row)])  # fmt: skip
        if (row.tenant_id, row.conversation_id, row.person_id) != (
            command.tenant_id,
            command.conversation_id,
            command.person_id,
        ):
            # A command id that already names someone else's reply: nothing of that reply is told
            # or done again (its outcome already holds that id).
            log.warning("reply command %s names another reply; ignored", command.command_id)
            return Handled()
        if row.state in SETTLED:
            return Handled(self.settled(command, row))
        return await self._send(command, row, now=now, last_delivery=last_delivery, first=[])

    async def give_up(self, command: SendReply, error: str, now: datetime) -> list[Outgoing]:
        """The command's last delivery failed: settle a reply still being sent (so its writer sees
        what became of it) and return what to publish; nothing for one settled already."""
        row = await self.store.get(command.command_id)
        if row is None or row.state != ReplyState.sending:
            return []
        fate = decisions.given_up(attempt_recorded=row.started_at is not None)
        state = ReplyState.in_doubt if fate is Next.in_doubt else ReplyState.failed
        row = await self._settle(row, state, now, error=error)
        return self.settled(command, row)

    # -- before anything is recorded ----------------------------------------------------------

    async def _check(self, command: SendReply, now: datetime) -> ReplyRow | Handled:
        if not await self.store.live_session(command.session, command.person_id, now):
            return self._refused(command, Rejection.invalid,
                                 "the session that sent this reply has ended: sign in and send it again")  # fmt: skip
        answered = await self.store.answered(command.tenant_id, command.conversation_id, command.reply_to)
        if answered is None:
            return self._refused(command, Rejection.unknown_conversation,
                                 "no message of that conversation in that tenant to answer")  # fmt: skip
        account = answered.account
        situation = await self._situation(answered, command.command_id, now)
        way = reply_rules.choose(situation, now, command.method, command.text)
        if isinstance(way, str):
            code = (
                Rejection.not_connected
                if not situation.connected or situation.failing
                else Rejection.outside_window
            )
            return self._refused(command, code, way)
        target = answered.interaction.external_id
        return ReplyRow(
            id=command.command_id,
            tenant_id=command.tenant_id,
            conversation_id=command.conversation_id,
            account_id=account.id,
            platform=account.platform,
            person_id=command.person_id,
            text=command.text,
            reply_to=answered.interaction.id,
            target=target,
            thread_id=answered.interaction.thread_id,
            method=way.method.value,
            tag=way.tag,
            key=key_for(Platform(account.platform), command.command_id, now),
            state=ReplyState.sending,
            requested_at=now,
            updated_at=now,
        )

    async def _situation(self, answered: Answered, reply_id: str, now: datetime) -> reply_rules.Situation:
        account = answered.account
        platform = Platform(account.platform)
        token = await self.store.refreshed(account.id) if account.reply_credentials else None
        failing = reply_rules.failing_of(
            account.reply_credentials, token.source_sha256 if token else None, token.failing if token else ""
        )
        units_left = None
        if platform is Platform.youtube and self.policy.youtube_reply_units is not None:
            replies = await self.store.youtube_replies_since(reply_rules.utc_day(now), reply_id)
            units_left = reply_rules.youtube_units_left(self.policy.youtube_reply_units, replies)
        ix = answered.interaction
        return reply_rules.Situation(
            platform=platform,
            kind=Kind(ix.kind),
            answered_at=ix.created_at,
            last_inbound_at=answered.conversation.last_inbound_at,
            context=answered.context,
            account_external_id=account.external_id,
            connected=bool(account.reply_credentials),
            failing=failing,
            private_reply_used=await self.store.private_reply_used(account.id, ix.external_id, reply_id),
            youtube_units_left=units_left,
            link=ix.url,
        )

    # -- posting ------------------------------------------------------------------------------

    async def _send(
        self, command: SendReply, row: ReplyRow, *, now: datetime, last_delivery: bool, first: list[Outgoing]
    ) -> Handled:
        answered = await self.store.answered(row.tenant_id, row.conversation_id, row.reply_to)
        if answered is None:  # the conversation went (pruned) between recording and posting
            row = await self._settle(row, ReplyState.failed, now, error="the conversation is gone")
            return Handled([*first, *self.settled(command, row)])
        client = self.clients(Platform(row.platform))
        outgoing = await self._outgoing(row, answered)
        if row.started_at is not None:
            # An attempt was made and its answer is not recorded: find out before posting again.
            earlier, there = await self._went_out(client, row, answered, outgoing)
            match decisions.after_unanswered(idempotent=client.idempotent, seen=earlier):
                case Next.sent:
                    assert there is not None
                    row = await self._sent(row, there, now)
                    return Handled([*first, *self.settled(command, row)])
                case Next.in_doubt:
                    error = "its answer was lost and the thread could not be read"
                    row = await self._settle(row, ReplyState.in_doubt, now, error=error)
                    return Handled([*first, *self.settled(command, row)])
        credentials = await self._credentials(answered)
        if isinstance(credentials, str):
            row = await self._settle(row, ReplyState.failed, now, error=credentials)
            return Handled([*first, *self.settled(command, row)])
        loaded = dict(credentials.values)
        refreshed = False
        while True:
            claimed = await self.store.start_attempt(row, now)
            if claimed is None:  # another replica took this attempt (a redelivery raced it): look later
                return Handled(first, retry_in=self.policy.retry_delay)
            row = claimed
            try:
                posted = await client.post(outgoing, credentials)
            except CredentialsFailed as failed:  # a value the platform needs is missing: nothing was sent
                row = await self.store.update(row.id, started_at=None, updated_at=now)
                problem = str(failed)
                await self._keep_credentials(answered, credentials, now, failing=problem)
                row = await self._settle(row, ReplyState.failed, now, error=problem)
                return Handled([*first, *self.settled(command, row), self._problem(answered, problem, now)])
            except Refused as refused:
                row = await self.store.update(
                    row.id, started_at=None, error=refused.error[:1000], updated_at=now
                )
                step = decisions.after_refused(
                    expired=refused.expired,
                    retry=refused.retry,
                    refreshed=refreshed,
                    last_delivery=last_delivery,
                )
                if step is Next.refresh:
                    refreshed = True
                    renewed = await self._refresh(client, answered, credentials, now)
                    if isinstance(renewed, Credentials):
                        credentials = renewed
                        loaded = dict(renewed.values)
                        continue
                    if renewed is None:  # the platform could not be asked now: nothing went out
                        if not last_delivery:
                            return Handled(first, retry_in=self.policy.retry_delay)
                        renewed = "the token expired and the platform could not be reached to refresh it"
                        row = await self._settle(row, ReplyState.failed, now, error=renewed, retry=True)
                        return Handled([*first, *self.settled(command, row)])
                    row = await self._settle(row, ReplyState.failed, now, error=renewed)
                    return Handled(
                        [*first, *self.settled(command, row), self._problem(answered, renewed, now)]
                    )
                if step is Next.later:
                    return Handled(first, retry_in=refused.retry_after or self.policy.retry_delay)
                row = await self._settle(row, ReplyState.failed, now, error=refused.error, retry=refused.retry,
                                         window=refused.window)  # fmt: skip
                return Handled([*first, *self.settled(command, row)])
            except Lost as lost:
                log.warning("the answer to reply %s was lost: %s", row.id, lost)
                seen: Seen | None = None
                found: Posted | None = None
                if not client.idempotent:
                    await self.sleep(self.policy.settle)
                    seen, found = await self._went_out(client, row, answered, outgoing)
                match decisions.after_lost(
                    idempotent=client.idempotent, seen=seen, last_delivery=last_delivery
                ):
                    case Next.sent:
                        assert found is not None
                        row = await self._sent(row, found, now)
                        return Handled([*first, *self.settled(command, row)])
                    case Next.later:  # the next delivery looks again (or, idempotent, posts again)
                        return Handled(first, retry_in=self.policy.retry_delay)
                row = await self._settle(row, ReplyState.in_doubt, now, error=f"no answer: {lost}")
                return Handled([*first, *self.settled(command, row)])
            if credentials.values != loaded:  # the client renewed a session while posting
                await self._keep_credentials(answered, credentials, now)
            row = await self._sent(row, posted, now)
            return Handled([*first, *self.settled(command, row)])

    async def _went_out(
        self, client: PlatformClient, row: ReplyRow, answered: Answered, outgoing: Post
    ) -> tuple[Seen, Posted | None]:
        """Whether an attempt whose answer is not recorded went out. The platform's echo, if
        ingest has stored it, answers first; an idempotent platform needs no reading (posting
        again under the same key is the answer); else the thread is read."""
        since = row.started_at or row.requested_at
        echo = next(
            (
                message
                for message in await self.store.brand_messages(
                    row.account_id, row.conversation_id, since - wire.CLOCK_SKEW
                )
                if wire.same_text(row.text, message.text)
            ),
            None,
        )
        if echo is not None and echo.sent_by in (None, row.person_id):
            return Seen.there, Posted(echo.external_id, echo.url, echo.created_at)
        if client.idempotent:
            return Seen.unknown, None
        credentials = await self._credentials(answered)
        if isinstance(credentials, str):
            return Seen.unknown, None
        for attempt in range(2):  # the second with a renewed token: one that merely expired reads again
            try:
                found = await client.find(outgoing, credentials, since)
            except (Unreadable, Refused, Lost, CredentialsFailed) as error:
                log.warning("could not read the thread of reply %s: %s", row.id, error)
                if attempt == 0 and not isinstance(error, CredentialsFailed):
                    renewed = await self._refresh(client, answered, credentials, utcnow())
                    if isinstance(renewed, Credentials):
                        credentials = renewed
                        continue
                return Seen.unknown, None
            return (Seen.there, found) if found is not None else (Seen.absent, None)
        return Seen.unknown, None

    async def _outgoing(self, row: ReplyRow, answered: Answered) -> Post:
        ix = answered.interaction
        target = Target(
            platform=Platform(row.platform),
            kind=Kind(ix.kind),
            account_external_id=answered.account.external_id,
            account_handle=answered.account.handle,
            thread_id=ix.thread_id,
            external_id=ix.external_id,
            parent_id=None,
            author_id=ix.author_id,
            author_handle=answered.conversation.author_handle,
            created_at=ix.created_at,
            context=answered.context,
            url=ix.url,
        )
        return Post(
            reply_id=row.id,
            key=row.key,
            text=row.text,
            method=ReplyMethod(row.method),
            tag=row.tag,
            target=target,
            person_id=row.person_id,
            person_name=await self.store.person_name(row.person_id),
            conversation_id=row.conversation_id,
            account_id=row.account_id,
        )

    # -- credentials --------------------------------------------------------------------------

    async def _credentials(self, answered: Answered) -> Credentials | str:
        """The account's reply credentials (as last refreshed, while `apply` gives the same), or
        why there are none."""
        sealed = answered.account.reply_credentials
        if not sealed:
            return "replies are not connected for this account"
        token = await self.store.refreshed(answered.account.id)
        try:
            if token is not None and token.source_sha256 == reply_rules.credentials_source(sealed):
                if token.failing:
                    return f"the connection is failing: {token.failing}"
                values = json.loads(self.box.open(token.credentials))
                return Credentials(self._with_account(values, answered), token.expires_at)
            return Credentials(self._with_account(json.loads(self.box.open(sealed)), answered))
        except ValueError:
            return "the account's reply credentials cannot be read with this service's key"

    @staticmethod
    def _with_account(values: dict[str, object], answered: Answered) -> dict[str, object]:
        """The account's own API address serves replies too when the block names none (a
        Mastodon instance is the account's `api_base_url`)."""
        if not values.get("api_base_url") and answered.account.api_base_url:
            return {**values, "api_base_url": answered.account.api_base_url}
        return values

    async def _refresh(
        self, client: PlatformClient, answered: Answered, credentials: Credentials, now: datetime
    ) -> Credentials | str | None:
        """New credentials; why they cannot be had (the connection is failing); None when the
        platform could not be asked now (rate limited, unreachable): try again later."""
        try:
            renewed = await client.refresh(credentials)
        except (Refused, Lost) as error:
            log.warning("could not refresh the reply token of %s: %s", answered.account.id, error)
            return None
        except CredentialsFailed as failed:
            problem = str(failed) or "the token expired and cannot be refreshed"
            await self._keep_credentials(answered, credentials, now, failing=problem)
            return problem
        await self._keep_credentials(answered, renewed, now)
        return renewed

    async def _keep_credentials(
        self, answered: Answered, credentials: Credentials, now: datetime, *, failing: str = ""
    ) -> None:
        """Keep credentials the platform renewed (or say they stopped working), for as long as
        `apply` gives the account the same ones."""
        sealed = answered.account.reply_credentials
        if not sealed:
            return
        await self.store.keep_token(
            answered.account.id,
            source=reply_rules.credentials_source(sealed),
            sealed=self.box.seal(credentials_json(credentials.values)),
            expires_at=credentials.expires_at,
            failing=failing,
            now=now,
        )

    # -- outcomes -----------------------------------------------------------------------------

    async def _sent(self, row: ReplyRow, posted: Posted, now: datetime) -> ReplyRow:
        platform_id, url = decisions.recorded(
            posted.platform_id, posted.url, fallback=f"{row.platform}:{row.key}"
        )
        return await self.store.update(
            row.id, state=ReplyState.sent, platform_id=platform_id, url=url,
            sent_at=posted.created_at or now, error="", updated_at=now,
        )  # fmt: skip

    async def _settle(
        self, row: ReplyRow, state: ReplyState, now: datetime, *, error: str, retry: bool = False,
        window: bool = False,
    ) -> ReplyRow:  # fmt: skip
        prefix = "retry:" if retry else "window:" if window else ""
        return await self.store.update(row.id, state=state, error=(prefix + error)[:1000], updated_at=now)

    def _event(self, row: ReplyRow) -> Outgoing:
        retry = row.error.startswith("retry:")
        error = row.error.split(":", 1)[1] if row.error.startswith(("retry:", "window:")) else row.error
        event = ReplyEvent(
            event_id=f"{row.id}-{row.state}",
            occurred_at=row.updated_at,
            tenant_id=row.tenant_id,
            reply_id=row.id,
            conversation_id=row.conversation_id,
            account_id=row.account_id,
            platform=Platform(row.platform),
            person_id=row.person_id,
            state=ReplyState(row.state),
            method=row.method,
            platform_id=row.platform_id,
            url=row.url,
            error=error if row.state != ReplyState.sent else "",
            retry=retry and row.state == ReplyState.failed,
        )
        return Outgoing(
            subjects.reply_event(tenant_id=row.tenant_id, conversation_id=row.conversation_id),
            event.model_dump_json().encode(),
            f"reply:{row.id}:{row.state}",
        )

    def settled(self, command: SendReply, row: ReplyRow) -> list[Outgoing]:
        """The messages of a settled reply (the same ids each time: a redelivery stores none twice)."""
        messages = [self._event(row)]
        if row.state == ReplyState.sent:
            messages.insert(0, self._interaction(command, row))
            outcome: CommandApplied | CommandRejected = CommandApplied(
                **_outcome_fields(command), summary=f"sent on {row.platform} ({row.method})"
            )
        else:
            _, _, error = (
                row.error.partition(":")
                if row.error.startswith(("retry:", "window:"))
                else ("", "", row.error)
            )
            code = {
                ReplyState.in_doubt: Rejection.in_doubt,
            }.get(
                ReplyState(row.state),
                Rejection.outside_window if row.error.startswith("window:") else Rejection.platform_error,
            )
            reason = (
                f"in doubt: check on the platform ({error})" if row.state == ReplyState.in_doubt else error
            )
            outcome = CommandRejected(**_outcome_fields(command), code=code, reason=reason[:1000])
        messages.append(_outcome(command, outcome))
        return messages

    def _interaction(self, command: SendReply, row: ReplyRow) -> Outgoing:
        """The sent reply as the brand's message in the thread, written by the person who sent it.
        Its id is the platform's: the platform's echo of it is the same interaction."""
        assert row.platform_id is not None
        ix = InteractionReceived(
            event_id=f"{row.id}-interaction",
            tenant_id=row.tenant_id,
            correlation_id=command.correlation_id,
            interaction_id=interaction_id(
                tenant_id=row.tenant_id,
                account_id=row.account_id,
                external_id=row.platform_id,
                edit_version=0,
            ),
            account_id=row.account_id,
            platform=Platform(row.platform),
            external_id=row.platform_id,
            kind=Kind.dm if row.method in ("send_api", "human_agent", "private_reply", "dm") else Kind.reply,
            direction=Direction.outbound,
            thread_id=row.thread_id,
            parent_id=row.target,
            author=Author(id=f"brand:{row.account_id}", name=row.person_id),
            text=row.text,
            url=row.url,
            created_at=row.sent_at or row.updated_at,
            received_at=row.updated_at,
            sent_by=row.person_id,
        )
        return Outgoing(
            subjects.interaction_received(tenant_id=row.tenant_id, account_id=row.account_id),
            ix.model_dump_json().encode(),
            f"reply-ix:{row.id}",
            command.correlation_id,
            headers={"Nats-Expected-Stream": subjects.INTERACTIONS_STREAM},
        )

    def _problem(self, answered: Answered, detail: str, now: datetime) -> Outgoing:
        problem = ConnectorProblem(
            tenant_id=answered.account.tenant_id,
            account_id=answered.account.id,
            platform=Platform(answered.account.platform),
            problem="failing",
            detail=f"replies cannot be posted: {detail}"[:1000],
            since=now,
        )
        return Outgoing(
            subjects.connector_problem(tenant_id=problem.tenant_id, account_id=problem.account_id),
            problem.model_dump_json().encode(),
            f"ops:{problem.account_id}:reply-failing:{now.isoformat()}",
        )

    def _refused(self, command: SendReply, code: Rejection, reason: str) -> Handled:
        outcome = CommandRejected(**_outcome_fields(command), code=code, reason=reason[:1000])
        return Handled([_outcome(command, outcome)])


def _outcome_fields(command: SendReply) -> dict[str, object]:
    return {
        "event_id": f"outcome-{command.command_id}",
        "tenant_id": command.tenant_id,
        "correlation_id": command.correlation_id,
        "command_id": command.command_id,
        "command_type": command.type,
        "issued_by": command.issued_by,
        "issued_at": command.issued_at,
        "conversation_id": command.conversation_id,
        "person_id": command.person_id,
    }


def _outcome(command: SendReply, outcome: CommandApplied | CommandRejected) -> Outgoing:
    kind: subjects.CommandOutcome = "applied" if isinstance(outcome, CommandApplied) else "rejected"
    return Outgoing(
        subjects.command_outcome(tenant_id=command.tenant_id, person_id=None, outcome=kind),
        outcome.model_dump_json().encode(),
        f"outcome:{command.command_id}",
        command.correlation_id,
    )


def key_for(platform: Platform, reply_id: str, now: datetime) -> str:
    """What the platform dedupes on for this reply, the same on every attempt: a Bluesky record
    key (a TID), else the reply's id (Mastodon's Idempotency-Key, the webhook's delivery id)."""
    if platform is Platform.bluesky:
        from services.outbound.platforms.bluesky import tid_for

        return tid_for(reply_id, now)
    return reply_id[:64]
