"""Prometheus metrics, computed at scrape time from the owners' own counters (nothing global)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloud_sync.outbox import Outbox
from cloud_sync.relay import Relay


class NodeCollector:
    """Reads the outbox and relay when Prometheus scrapes, so the hot paths count with plain ints."""

    def __init__(self, outbox: Outbox, relay: Relay, devices: Callable[[], dict[str, str]]) -> None:
        self._outbox = outbox
        self._relay = relay
        self._devices = devices

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (prometheus_client's custom-collector protocol)."""
        stats = self._outbox.stats()
        relay = self._relay.status()
        depth = GaugeMetricFamily("kiosk_edge_outbox_depth", "Events waiting in the outbox", labels=["type"])
        for etype, count in sorted(stats.by_type.items()):
            depth.add_metric([etype], count)
        yield depth
        yield GaugeMetricFamily(
            "kiosk_edge_outbox_bytes", "Payload bytes waiting in the outbox", value=stats.bytes
        )
        yield GaugeMetricFamily(
            "kiosk_edge_outbox_oldest_age_seconds", "Age of the oldest queued event", value=stats.oldest_age()
        )
        yield GaugeMetricFamily(
            "kiosk_edge_outbox_full",
            "1 while the outbox bound refuses protected events",
            value=int(stats.full),
        )
        evicted = CounterMetricFamily(
            "kiosk_edge_outbox_evicted", "Low-value events evicted by the bound policy", labels=["type"]
        )
        for etype, count in sorted(stats.evicted.items()):
            evicted.add_metric([etype], count)
        yield evicted
        refused = CounterMetricFamily(
            "kiosk_edge_outbox_refused", "Events refused because the outbox was full", labels=["type"]
        )
        for etype, count in sorted(stats.refused.items()):
            refused.add_metric([etype], count)
        yield refused
        yield GaugeMetricFamily(
            "kiosk_edge_mqtt_connected", "1 while connected to the broker", value=int(relay.connected)
        )
        yield CounterMetricFamily("kiosk_edge_mqtt_published", "QoS 1 publishes sent", value=relay.published)
        yield CounterMetricFamily(
            "kiosk_edge_mqtt_acknowledged", "Publishes acknowledged (PUBACK)", value=relay.acknowledged
        )
        yield CounterMetricFamily(
            "kiosk_edge_mqtt_reconnects", "Connection attempts after the first", value=relay.reconnects
        )
        yield GaugeMetricFamily(
            "kiosk_edge_mqtt_in_flight", "Publishes awaiting PUBACK", value=relay.in_flight
        )
        devices = GaugeMetricFamily(
            "kiosk_edge_device_up", "1 when a device is present or simulated", labels=["device"]
        )
        for name, state in sorted(self._devices().items()):
            devices.add_metric([name], int(state in ("present", "simulated")))
        yield devices


def make_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry owned by the node (not prometheus_client's process-wide default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
