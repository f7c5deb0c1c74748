"""Settings of logins, sessions and cross-site checks (environment or `.env`,
like `core.settings`).

Kept apart from `core.settings` so the flows' settings stay about flows; every process reads
the same environment, so `run.py` passes these on without knowing them.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth.origin import parse_allowed


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    session_max_age_s: float = Field(
        default=12 * 3600, description="A login ends this long after it began, whatever happens."
    )
    session_idle_s: float = Field(
        default=2 * 3600, description="A login ends after this long without any request."
    )
    login_max_failures: int = Field(
        default=5, description="Wrong passwords in a row for one name from one address "
        "before that pair is locked out."
    )  # fmt: skip
    login_lockout_s: float = Field(
        default=60.0, description="First lockout; each further lockout of the pair doubles it."
    )
    login_lockout_max_s: float = Field(default=900.0, description="Longest lockout.")
    login_ip_max_failures: int = Field(
        default=20, description="Failed logins from one address (any name) within "
        "LOGIN_IP_WINDOW_S before the address is refused until the window passes."
    )  # fmt: skip
    login_ip_window_s: float = Field(default=600.0, description="See LOGIN_IP_MAX_FAILURES.")
    allowed_origins: str = Field(
        default="", description="Comma-separated origins (`https://host[:port]`) trusted as this "
        "site's own besides the request's Host: set it when a reverse proxy rewrites Host."
    )  # fmt: skip

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        parse_allowed(value)  # a bad entry stops the start, with the reason
        return value


@lru_cache
def get_auth_settings() -> AuthSettings:
    return AuthSettings()
