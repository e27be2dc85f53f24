"""Sending email over SMTP (aiosmtplib): STARTTLS, implicit TLS or plain, with auth."""

from email.message import EmailMessage

import aiosmtplib

from services.notify.settings import NotifySettings
from shared.settings import SettingsError


class MailError(RuntimeError):
    pass


class SmtpMailer:
    def __init__(self, settings: NotifySettings) -> None:
        if not settings.smtp_host:
            raise SettingsError("STAYHUMAN_SMTP_HOST is not set: notify cannot send alerts")
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout.total_seconds(),
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            raise MailError(f"{type(error).__name__}: {error}") from error
