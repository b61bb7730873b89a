"""The clinic around the consult: doctor presence for waiting patients, the symptom-tree
questionnaire, triage and department queues, the on-duty dashboard (see docs/clinic.md).

``setup(app, host, store, ...)`` registers the listeners, tables and HTTP routes with the
server application.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from kernel.records.store import RecordStore
    from signaling.extensions import FeatureHost

    from .settings import MqttSettings
    from .teaching import SpeakerMedia

# the MQTT bridge (clinic/mqtt.py) when [mqtt] is configured
MQTT: web.AppKey[Any] = web.AppKey("clinic_mqtt", object)


def setup(
    app: web.Application,
    host: FeatureHost,
    store: RecordStore,
    mqtt: MqttSettings | None = None,
    media: SpeakerMedia | None = None,
    send_webhook: Callable[[str, dict[str, Any]], None] | None = None,
) -> None:
    """Register the clinic features with the server application: device readings from
    ``mqtt`` if configured, speaker promotion through ``media``, device alerts also sent to
    the hospital's systems through ``send_webhook``."""
    from signaling.schemas import QUESTIONNAIRE_CHECK

    from . import tables  # noqa: F401  (tables on the shared metadata before create_all)
    from .alerts import DeviceAlerts
    from .device_routes import ALERTS
    from .device_routes import add_routes as add_device_routes
    from .duty import DutyClaims
    from .presence import DoctorPresence
    from .questionnaire import check_response
    from .queues import Queues
    from .routes import ALERTS_PROVIDER, QUEUES, add_routes
    from .teaching import TeachingRounds

    # the pre-consult card's questionnaire answers must fit their questionnaire
    host.add_payload_check(QUESTIONNAIRE_CHECK, check_response)
    DoctorPresence(host)
    app[QUEUES] = Queues(host, store)
    alerts = DeviceAlerts(store)
    app[ALERTS] = alerts
    if send_webhook is not None:  # the care team's own systems hear of each alert
        webhook = send_webhook

        async def alert_webhook(alert: dict[str, object]) -> None:
            webhook("device_alert", {"alert": alert})

        alerts.listeners.append(alert_webhook)

    async def open_alerts(duty: DutyClaims) -> list[dict[str, object]]:
        return await alerts.list("open", list(duty.departments), limit=200)

    app[ALERTS_PROVIDER] = open_alerts
    add_routes(app)
    add_device_routes(app)
    TeachingRounds(host, media)

    async def _load(app: web.Application) -> None:
        await app[QUEUES].load()

    app.on_startup.append(_load)

    if mqtt is not None:
        from .mqtt import MqttBridge

        bridge = MqttBridge(app, mqtt)
        app[MQTT] = bridge

        async def _mqtt(_app: web.Application) -> None:
            bridge.start()

        async def _mqtt_close(_app: web.Application) -> None:
            await bridge.close()

        app.on_startup.append(_mqtt)
        app.on_shutdown.append(_mqtt_close)
