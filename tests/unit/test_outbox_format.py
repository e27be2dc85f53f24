"""What an outbox row holds comes back as it went in, whatever its payloads hold; rows written in
the earlier format (lines of JSON) are still read."""

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.messages import Outgoing
from shared.outbox import decode, encode

text = st.text(max_size=40)
messages = st.lists(
    st.builds(
        Outgoing,
        subject=text,
        payload=st.binary(max_size=300) | st.just(b'{"a":"line\\none\\ntwo"}\n\n'),
        msg_id=text,
        correlation_id=text,
        headers=st.dictionaries(text, text, max_size=3),
    ),
    max_size=20,
)


@given(messages)
def test_messages_come_back_as_they_went_in(batch: list[Outgoing]) -> None:
    assert decode(encode(batch)) == batch


def test_a_row_of_the_earlier_format_is_read() -> None:
    payload = {"type": "conversation.assigned", "reason": 'said "hi"\nthen left'}
    line = json.dumps(["sh.conv.acme.c1.assigned", "assigned:c1", "corr-1", json.dumps(payload), {"a": "b"}])
    earlier = (line + "\n" + line.replace("c1", "c2")).encode()
    decoded = decode(earlier)
    assert [m.subject for m in decoded] == ["sh.conv.acme.c1.assigned", "sh.conv.acme.c2.assigned"]
    assert json.loads(decoded[0].payload) == payload
    assert decoded[0].msg_id == "assigned:c1" and decoded[0].headers == {"a": "b"}
