"""Which `Sender` serves a destination, and a one-off test notification (page and CLI)."""

from __future__ import annotations

import time
from urllib.parse import quote

from core.notify_config import Notifications, Target
from core.notify_plan import Job, Subscription, user_target
from notify import message
from notify.apprise_sender import AppriseSender
from notify.transport import Delivery, Sender, deliver
from notify.webhook import WebhookSender


def sender_for(target: Target) -> Sender:
    return WebhookSender(target) if target.is_webhook else AppriseSender(target)


def user_destination(sub: Subscription, n: Notifications) -> Target:
    """A person's address as a target: an e-mail goes through `mail_url` (`to=` added), an
    Apprise URL as it is (it is theirs; kept in Redis, never in the venue file)."""
    if sub.is_email:
        base = n.mail_url or ""
        url = base + ("&" if "?" in base else "?") + "to=" + quote(sub.address, safe="@")
    else:
        url = sub.address
    # model_construct: a person's own URL may carry their own token (the venue-file rule
    # against literal secrets is about the venue file)
    return Target.model_construct(name=user_target(sub.username), url=url, secret=None,
                                  timeout_s=10.0, concurrency=2)  # fmt: skip


async def send_test(target: Target, link_base: str) -> Delivery:
    """Send a test notification to `target` now (not through the outbox) and say how it went."""
    job = Job(
        id=f"test/{target.name}/{int(time.time() * 1000)}", kind="test", transition="test",
        target=target.name, route="test", created_at=time.time(),
    )  # fmt: skip
    sender = sender_for(target)
    try:
        return await deliver(
            sender, job.id, message.title(job), message.text(job, link_base),
            message.payload(job, link_base),
        )  # fmt: skip
    finally:
        await sender.close()
