"""The demo installation of `stayhuman up --demo`: its configuration, its feed, and one
person for each role of the inbox, whom anyone trying the demo may sign in as."""

from dataclasses import dataclass

# The role each demo person has in config.yaml, in the order `up --demo` lists them.
ROLES = (
    ("agency admin", "ada"),
    ("tenant admin", "theo"),
    ("team lead", "rosa"),
    ("agent", "kai"),
    ("client viewer", "cleo"),
)


@dataclass(frozen=True)
class DemoLogin:
    role: str
    person_id: str
    email: str
    password: str


def demo_password(person_id: str) -> str:
    """A demo person's fixed password, printed by `up --demo` for anyone to use: the demo
    holds no real conversations, and `up` without --demo sets no password."""
    return f"{person_id}-demo-password"
