"""The ``[mqtt]`` section of the server settings (rtc_server/config.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MqttSettings(BaseModel):
    """An MQTT broker whose device readings feed POST /api/observations' path (docs/clinic.md)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    topic: str = Field("teleconsult/observations/+", min_length=1, max_length=200)
    results_prefix: str = Field("teleconsult/results/", min_length=1, max_length=200)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
