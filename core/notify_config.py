"""The venue file's `notifications:` section: targets, routes, escalation — and their secrets.

Targets are one URL each. `http://` / `https://` URLs are our own **signed webhooks**
(Standard Webhooks; `secret` required); every other scheme goes to **Apprise** (`mailto://`,
`mailtos://`, `slack://`, `ntfys://`, `tgram://`, `json://`, …), so every service Apprise knows
works without code of ours.

Secrets never live in the venue file: a URL or a webhook secret names them as `{env:NAME}`
(an environment variable) or `{file:/path}` (a file, e.g. a Docker/systemd secret; its
trailing newline is dropped). They are resolved only when a notification is sent
(`resolve`), so the flows and the dashboard load the venue file without them. A literal
password in a URL (`user:pw@host`, `?password=…`, `?token=…`) or a literal webhook secret is
refused at load, with the field's path. What pages and logs show is the template, never the
resolved URL (`redact` also masks anything that slipped through).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, time
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, quote, urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.alarms import SEVERITIES, RaiseClearRule, Severity

TargetName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Glob = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^|\s]+$")]
NotifyOn = Literal["raised", "acknowledged", "cleared", "escalated"]
ON_DEFAULT: tuple[NotifyOn, ...] = ("raised", "cleared")

PLACEHOLDER = re.compile(r"\{(env|file):([^{}]+)\}")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
#: Query parameters whose value is a secret in Apprise URLs (and commonly elsewhere).
SECRET_PARAMS = frozenset(
    {"pass", "password", "pwd", "token", "secret", "key", "apikey", "api_key", "access_token",
     "auth", "authorization", "webhook", "bot_token", "user_key", "routing_key", "integrationkey"}
)  # fmt: skip
#: The Apprise schemes a person may use for their own address (no generic webhooks: a user
#: must not make the server POST to arbitrary hosts of the internal network).
DEFAULT_USER_SCHEMES = (
    "mailto", "mailtos", "ntfy", "ntfys", "tgram", "slack", "msteams", "pover", "matrix",
    "matrixs", "discord", "signal", "signals", "gotify", "gotifys", "pushbullet",
)  # fmt: skip
#: The built-in alarm rule for a target that keeps failing (added when targets exist).
FAILING_RULE_ID = "notifications-failing"
FAILING_EVENT, RECOVERED_EVENT = "notify.failing", "notify.recovered"
FAILING_SOURCE_PREFIX = "notify-"


class SecretError(ValueError):
    """A `{env:…}`/`{file:…}` placeholder that cannot be resolved (the message names it)."""


def placeholders(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]


def _secret_value(kind: str, name: str) -> str:
    if kind == "env":
        v = os.environ.get(name)
        if v is None:
            raise SecretError(f"environment variable {name} is not set")
        return v
    try:
        return Path(name).read_text().rstrip("\r\n")
    except OSError as exc:
        raise SecretError(f"secret file {name}: {exc.strerror or exc}") from None


def resolve(template: str, quote_values: bool = True) -> tuple[str, list[str]]:
    """The template with its placeholders replaced, and the secret values used (to scrub them
    from error messages). Values inside a URL are percent-encoded (a password with `@` or `/`
    must not change the URL's shape) unless the placeholder is the whole text."""
    values: list[str] = []
    whole = PLACEHOLDER.fullmatch(template.strip()) is not None

    def sub(m: re.Match[str]) -> str:
        v = _secret_value(m.group(1), m.group(2))
        values.append(v)
        return v if (whole or not quote_values) else quote(v, safe="")

    return PLACEHOLDER.sub(sub, template), values


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value (and its URL-encoded form) replaced by `***`."""
    for s in sorted(set(secrets), key=len, reverse=True):
        if len(s) >= 3:
            text = text.replace(s, "***").replace(quote(s, safe=""), "***")
    return text


_TOKEN = re.compile(r"^PLACEHOLDER\d+X$")


def _masked(url: str) -> tuple[str, list[str]]:
    """`url` with each placeholder replaced by a plain token (`{env:A}` holds a `:` that would
    look like a password separator), and the placeholders to put back."""
    found: list[str] = []

    def sub(m: re.Match[str]) -> str:
        found.append(m.group(0))
        return f"PLACEHOLDER{len(found) - 1}X"

    return PLACEHOLDER.sub(sub, url), found


def _unmasked(text: str, found: list[str]) -> str:
    for i, ph in enumerate(found):
        text = text.replace(f"PLACEHOLDER{i}X", ph)
    return text


def _literal_secret(url: str) -> str | None:
    """Why `url` holds a secret in clear, or None. Placeholders are fine."""
    masked, _ = _masked(url.strip())
    if _TOKEN.match(masked):
        return None
    try:
        parts = urlsplit(masked)
    except ValueError:
        return "not a URL"
    if not parts.scheme:
        return "not a URL (no scheme://)"
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        if ":" in userinfo and not _TOKEN.match(userinfo.split(":", 1)[1]):
            return "the password is written in the URL; use {env:NAME} or {file:/path}"
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in SECRET_PARAMS and v and not _TOKEN.match(v):
            return f"?{k}= is written in the URL; use {{env:NAME}} or {{file:/path}}"
    return None


def redact(url: str) -> str:
    """A URL fit for a page or a log: placeholders kept (they are names, not secrets), any
    literal password or secret query value masked."""
    masked, found = _masked(url.strip())
    if _TOKEN.match(masked):
        return url.strip()
    try:
        parts = urlsplit(masked)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, pw = userinfo.split(":", 1)
            userinfo = f"{user}:{pw if _TOKEN.match(pw) else '***'}"
        netloc = f"{userinfo}@{host}"
    query = "&".join(
        f"{k}={'***' if k.lower() in SECRET_PARAMS and not _TOKEN.match(v) else v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    out = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    return _unmasked(out + (f"?{query}" if query else ""), found)


def parse_span(span: str) -> tuple[time, time | None]:
    """`HH:MM-HH:MM` → (start, end); end None = midnight at the end of the day."""
    m = _SPAN.match(span)
    if not m:
        raise ValueError(f"{span!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{span!r} is not a valid time span")
    return time(h1, m1), (None if h2 == 24 else time(h2, m2))


def in_span(local: time, span: str) -> bool:
    start, end = parse_span(span)
    if end is None:
        return local >= start
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # spans midnight


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """Where notifications go: one URL. `http(s)://` → our signed webhook (needs `secret`),
    anything else → Apprise."""

    name: TargetName
    url: Annotated[str, Field(min_length=3, max_length=4000)]
    #: Standard Webhooks secret (`whsec_<base64>`), as `{env:NAME}` / `{file:/path}`.
    secret: Annotated[str, Field(max_length=400)] | None = None
    #: One attempt may take this long; then it counts as failed (and is retried).
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: Attempts to this target at the same time (the others wait; other targets never do).
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4

    @property
    def is_webhook(self) -> bool:
        return self.url.lower().startswith(("http://", "https://"))

    @model_validator(mode="after")
    def _secrets(self) -> Target:
        why = _literal_secret(self.url)
        if why:
            raise ValueError(f"url: {why}")
        if self.is_webhook and not self.secret:
            raise ValueError(
                "an http(s) webhook needs `secret` (Standard Webhooks: {env:NAME} holding "
                "whsec_…); for an unsigned JSON POST use Apprise's json:// or jsons://"
            )
        if self.secret is not None and not PLACEHOLDER.fullmatch(self.secret.strip()):
            raise ValueError("secret: write {env:NAME} or {file:/path}, never the secret itself")
        return self

    @property
    def shown_url(self) -> str:
        return redact(self.url)


class Route(_Strict):
    """Which alarms go to which targets, on which transitions. Every matching route applies;
    a target reached by several routes gets one notification per transition (the first
    route, in file order, names it)."""

    name: TargetName
    targets: Annotated[list[TargetName], Field(min_length=1, max_length=100)]
    severities: list[Severity] = Field(default_factory=lambda: list(SEVERITIES))
    rules: list[Glob] = Field(default_factory=lambda: ["*"])
    sources: list[Glob] = Field(default_factory=lambda: ["*"])
    send_on: list[NotifyOn] = Field(default_factory=lambda: list(ON_DEFAULT))
    #: Local times (the event's time zone) when this route sends nothing but CRITICAL.
    quiet_hours: list[str] = Field(default_factory=list)
    #: Only used as an escalation step (`escalate_to` of another route), never on its own.
    escalation_only: bool = False
    #: Still ACTIVE_UNACK this long after it was raised → notify `escalate_to` ...
    escalate_after_min: Annotated[float, Field(gt=0, le=10_080)] | None = None
    escalate_to: TargetName | None = None
    #: ... and again every this many minutes until it is acknowledged or cleared.
    repeat_every_min: Annotated[float, Field(gt=0, le=10_080)] | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _spans(cls, spans: list[str]) -> list[str]:
        for s in spans:
            parse_span(s)
        return spans

    @model_validator(mode="after")
    def _escalation(self) -> Route:
        if (self.escalate_after_min is None) != (self.escalate_to is None):
            raise ValueError("give both escalate_after_min and escalate_to, or neither")
        if self.repeat_every_min is not None and self.escalate_to is None:
            raise ValueError("repeat_every_min needs escalate_to")
        return self

    def matches(self, severity: str, rule_id: str, source: str) -> bool:
        return (
            severity in self.severities
            and any(fnmatchcase(rule_id, g) for g in self.rules)
            and any(fnmatchcase(source, g) for g in self.sources)
        )

    def quiet(self, severity: str, at: datetime, zone: ZoneInfo) -> bool:
        """True when this route stays silent for `severity` at `at` (CRITICAL never is)."""
        if severity == "CRITICAL" or not self.quiet_hours:
            return False
        local = at.astimezone(zone).time().replace(tzinfo=None)
        return any(in_span(local, s) for s in self.quiet_hours)


class Notifications(_Strict):
    targets: list[Target] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    #: The dashboard's address as people reach it (the link in each notification).
    link_base: Annotated[str, Field(max_length=500)] = "http://127.0.0.1:8080"
    #: Apprise URL used for people's plain e-mail addresses (`?to=` is added), e.g.
    #: `mailtos://{env:SMTP_USER}:{env:SMTP_PASSWORD}@smtp.example.com?from=alarms@x.org`.
    mail_url: Annotated[str, Field(max_length=4000)] | None = None
    #: Apprise schemes people may give as their own address on the Notifications page.
    user_schemes: list[str] = Field(default_factory=lambda: list(DEFAULT_USER_SCHEMES))
    #: Failed attempts in a row after which a target raises "notifications to X failing".
    failing_after: Annotated[int, Field(ge=1, le=1000)] = 3
    #: Attempts per notification before it is given up (backoff 2 s, 4 s, … up to 5 min).
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 12
    #: Severity of the "notifications to X failing" alarm.
    failing_severity: Severity = "MAJOR"

    @field_validator("mail_url")
    @classmethod
    def _mail(cls, v: str | None) -> str | None:
        if v is not None and (why := _literal_secret(v)):
            raise ValueError(why)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Notifications:
        names = [t.name for t in self.targets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate target name(s): {', '.join(dup)}")
        routes = [r.name for r in self.routes]
        dup = sorted({n for n in routes if routes.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate route name(s): {', '.join(dup)}")
        for i, r in enumerate(self.routes):
            unknown = [t for t in r.targets if t not in names]
            if unknown:
                raise ValueError(f"routes.{i}.targets names unknown target(s): {unknown}")
            if r.escalate_to is not None and r.escalate_to not in routes:
                raise ValueError(f"routes.{i}.escalate_to names unknown route {r.escalate_to!r}")
        return self

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def failing_rule(self) -> RaiseClearRule:
        """The alarm rule a failing target raises (an event `notify.failing` from source
        `notify-<target>`, cleared by `notify.recovered`) — the video flow's camera pattern."""
        return RaiseClearRule(
            id=FAILING_RULE_ID, name="Notifications failing", kind="raise_clear",
            severity=self.failing_severity, raise_on=FAILING_EVENT, clear_on=RECOVERED_EVENT,
            source=f"{FAILING_SOURCE_PREFIX}*", rearm_s=0,
        )  # fmt: skip
