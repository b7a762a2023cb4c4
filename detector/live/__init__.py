"""The live detector: MQTT sample batches in, scored movements and night summaries out.

- ``core``: :class:`~detector.live.core.DetectorCore`, sans I/O -- messages and clock ticks in, effects out;
- ``routing``: topic -> replica, subject, leg; ``night``: a subject's night state and its minute points;
- ``chunk_policy``: how much of a leg is held before scoring (latency vs throughput);
- ``outputs``: the MQTT results (movement, night, Home Assistant discovery);
- ``service``: :class:`~detector.live.service.LiveDetector`, the transport and storage around the core.
"""
