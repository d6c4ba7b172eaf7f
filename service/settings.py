"""Service settings: environment variables with the ``LONGTAIL_`` prefix, or a ``.env`` file.

Paths default under ``state_dir`` (``./.longtail``): the SQLite store, Ray Tune's storage and the data root.
``LONGTAIL_API_TOKENS`` takes JSON (``{"tok1": "alice"}``) or the short form ``tok1:alice,tok2:bob``.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for a host name or address that only the local machine can reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything a deployment configures. Unset paths are derived from ``state_dir``."""

    model_config = SettingsConfigDict(env_prefix="LONGTAIL_", env_file=".env", extra="ignore")

    state_dir: Path = Path(".longtail")
    store_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<state_dir>/longtail.db")
    storage_path: Path | None = Field(None, description="Ray Tune experiments; default <state_dir>/ray_results")
    data_root: Path | None = Field(None, description="Dataset files live under it; default <state_dir>/data")
    secrets_dir: Path | None = Field(
        None,
        description="Per-job driver secrets (0600 files) and the cursor key; default <state_dir>/secrets. "
        "With a remote Ray cluster it must be readable by the driver's node, like storage_path.",
    )

    ray_address: str | None = Field(
        None, description="An existing cluster ('auto', 'ray://...', 'host:6379'); None = embedded"
    )
    ray_dashboard_url: str | None = Field(None, description="Jobs API URL; derived in embedded mode")
    ray_num_cpus: int | None = Field(None, ge=1, description="Embedded mode: CPUs of the local Ray (default: all)")
    ray_num_gpus: int | None = Field(None, ge=0, description="Embedded mode: GPUs of the local Ray (default: detected)")
    stop_ray_on_exit: bool = Field(
        False, description="Embedded mode: stop the local Ray head (and its jobs) when the service stops"
    )

    api_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    public_url: str | None = Field(None, description="How drivers reach the service; default http://127.0.0.1:<port>")

    max_trials_per_job: int = Field(64, ge=1)
    max_epochs: int = Field(500, ge=1)
    max_jobs_per_owner: int = Field(10, ge=1, description="Queued + running jobs per owner")
    max_running_jobs: int = Field(1, ge=1, description="Jobs running on Ray at once; the rest wait as queued")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_predict_rows: int = Field(1024, ge=1, le=4096, description="Rows per POST /jobs/{id}/predict")
    max_event_body_bytes: int = Field(
        16 << 20,
        ge=1024,
        description="Driver event batches: the driver sends <= 200 events a batch (an epoch event is ~0.3-40 KB with "
        "per-class metrics), and the final JobResult of 65 trials x 500 epochs is ~9 MB",
    )
    body_read_timeout_s: float = Field(30.0, gt=0, description="A request body that stalls this long gets 408")
    header_read_timeout_s: float = Field(10.0, gt=0, description="A connection without complete headers is closed")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="An idle kept-alive connection is closed")
    max_workers_per_trial: int = Field(64, ge=1)

    max_resumes: int = Field(
        3, ge=0, description="Times a running job is resumed from its checkpoints after its Ray cluster lost it"
    )

    reconcile_interval_s: float = Field(5.0, gt=0)
    sse_heartbeat_s: float = Field(15.0, gt=0)
    sse_poll_s: float = Field(1.0, gt=0)
    log_tail_lines: int = Field(40, ge=1, description="Driver log lines kept in a failed job's error")

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return json.loads(text)
        tokens: dict[str, str] = {}
        for item in text.split(","):
            token, sep, owner = item.strip().partition(":")
            if not sep or not token or not owner:
                raise ValueError("expected 'token:owner' pairs separated by commas")
            tokens[token] = owner.strip()
        return tokens

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        for token, owner in self.api_tokens.items():
            if len(token) < 8 or not owner:
                raise ValueError("api tokens need >= 8 characters and an owner")
        # Absolute paths: drivers run in another working directory, and Ray Tune wants absolute storage paths.
        self.state_dir = self.state_dir.expanduser().absolute()
        if self.store_url is None:
            self.store_url = f"sqlite:///{self.state_dir / 'longtail.db'}"
        self.storage_path = (self.storage_path or self.state_dir / "ray_results").expanduser().absolute()
        self.data_root = (self.data_root or self.state_dir / "data").expanduser().absolute()
        self.secrets_dir = (self.secrets_dir or self.state_dir / "secrets").expanduser().absolute()
        if self.public_url is None:
            self.public_url = f"http://127.0.0.1:{self.port}"
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
