"""The README's worked example, step by step, on the shipped example configuration: the same
loading code and pure functions the router runs, at the moments the example names."""

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.router import conversations
from services.router.conversations import random_id
from services.router.service import Outcome, settle
from services.router.sql import SqlRepository
from shared.db.session import create_engine, session_factory
from shared.events import Author, Direction, InteractionReceived, Kind, Platform
from shared.ids import conversation_id, interaction_id
from stayhuman.config import apply_config, load_config

BERLIN = ZoneInfo("Europe/Berlin")
EXAMPLE = Path(__file__).parents[2] / "examples" / "stayhuman.yaml"


def comment(at: datetime) -> InteractionReceived:
    return InteractionReceived(
        tenant_id="bluebird",
        interaction_id=interaction_id(
            tenant_id="bluebird", account_id="bluebird-fb", external_id="c1", edit_version=0
        ),
        account_id="bluebird-fb",
        platform=Platform.facebook,
        external_id="c1",
        kind=Kind.comment,
        direction=Direction.inbound,
        thread_id="comment:c1",
        author=Author(id="fb-user-1", name="Jonas"),
        text="Ich möchte eine Rückerstattung, bitte",
        language="de",
        created_at=at,
        received_at=at,
    )


async def test_the_readme_worked_example(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    await apply_config(sessions, load_config(EXAMPLE), source=str(EXAMPLE))
    friday = datetime(2026, 5, 22, 17, 55, tzinfo=BERLIN)
    cid = conversation_id(account_id="bluebird-fb", thread_id="comment:c1")

    repository = SqlRepository(sessions)
    async with repository.unit_of_work() as uow:
        world = await uow.load_world(
            now=friday, backfill_cutoff=timedelta(hours=24), new_id=random_id, account_ids={"bluebird-fb"}
        )
        conversation = conversations.receive(world, comment(friday), cid)
        assert conversation is not None
        await settle(uow, world, Outcome())
    # 1. the topic
    assert (conversation.topic, conversation.priority) == ("refunds", "high")
    # 2. only maria has the skill and the language, and her Friday shift is over: the queue
    assert conversation.owner_id is None
    assert conversation.assignment_reason == (
        "topic refunds: team billing: 1 matching member busy or away; waiting in the team queue"
    )
    # 3. thirty business minutes: five on Friday, then Whit Monday is a holiday
    assert conversation.due_at == datetime(2026, 5, 26, 9, 25, tzinfo=BERLIN)
    assert conversation.warn_at == datetime(2026, 5, 26, 9, 10, tzinfo=BERLIN)

    # 4. Monday 09:00: maria's shift begins; her timer's check gives her the queued refund
    monday = datetime(2026, 5, 25, 9, 0, tzinfo=BERLIN)
    async with repository.unit_of_work() as uow:
        world = await uow.load_world(
            now=monday, backfill_cutoff=timedelta(hours=24), new_id=random_id, person_ids={"maria"}
        )
        conversations.check_availability(world, "maria")
        await settle(uow, world, Outcome())
        again = await uow.load_world(
            now=monday, backfill_cutoff=timedelta(hours=24), new_id=random_id, conversation_ids={cid}
        )
    taken = again.conversations[cid]
    assert taken.owner_id == "maria"
    assert "from the queue" in taken.assignment_reason
    assert again.people["maria"].load == 2  # high priority weighs 2 for her
    # and her next shift change is armed: the end of Monday's morning block
    assert [t.at for t in world.timers] == [datetime(2026, 5, 25, 13, 0, tzinfo=BERLIN)]
    await engine.dispose()
