"""Notifications: alarm transitions → e-mail, chat, pagers and signed webhooks.

`notify.notifier` is the process (outbox, retries, escalation), `notify.transport` the one
interface every way of sending implements (`notify.apprise_sender`, `notify.webhook`, like
Frigate's comms/), `notify.message` what a notification says. The decisions are pure
functions in `core.notify_plan`; the venue file's section is `core.notify_config`.
"""
