from pydantic import Field

from shared.settings import CommonSettings


class NotifySettings(CommonSettings):
    notify_port: int = Field(default=8082, description="HTTP port of notify (health, mailbox).")
