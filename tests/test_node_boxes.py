"""The node's fire alarm box inputs as a deployment composes them: ``elements.cad.box_mqtt``
subscribes to the real Mosquitto on 127.0.0.1:1883 (a unique topic per test) when the boxes
start, before and without the SIP elements, and an alarm published there becomes a CAD
incident at the box's location."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiomqtt
import yaml
from rich.console import Console

from firebox.deployment import load_deployment
from firebox.node import build_node, start_boxes, write_demo


async def test_box_alarm_over_mqtt_reaches_the_cad_without_sip(tmp_path: Path) -> None:
    topic = f"firebox-test/{uuid.uuid4().hex}/boxes"
    path, _ = write_demo(tmp_path, seed=911, n_towns=40, listen="127.0.0.1:0", sip_listen="127.0.0.1:0",
                         call_handling=True, console=Console(quiet=True))  # fmt: skip
    doc = yaml.safe_load(path.read_text())
    doc["elements"]["cad"]["box_mqtt"] = {"url": "mqtt://127.0.0.1:1883", "topic": f"{topic}/#"}
    path.write_text(yaml.safe_dump(doc))
    node = build_node(load_deployment(path), console=Console(quiet=True))
    await start_boxes(node)  # the SIP elements are never started here
    try:
        assert node.box_mqtt is not None
        number, box = next(iter(node.cad.boxes.items()))
        payload = json.dumps({"box": number, "kind": "alarm", "time": "2026-11-24T10:00:00Z", "device": "gw-1"})
        incident = None
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            for _ in range(100):  # bounded: the input subscribes as it starts
                await client.publish(f"{topic}/{number}", payload.encode(), qos=1)
                await asyncio.sleep(0.1)
                made = [i for i in node.cad.incidents() if i.source.box == number]
                if made:
                    incident = made[0]
                    break
        assert incident is not None, "the alarm did not become an incident"
        assert incident.location.point == box.point
    finally:
        if node.box_listener is not None:
            node.box_listener.close()
        if node.box_mqtt is not None:
            await node.box_mqtt.aclose()
        if node.cad_log_sender is not None:
            await node.cad_log_sender.aclose()
