"""Prometheus metrics, scraped from a real server and parsed by prometheus_client."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncmpm import MPM
from tests.conftest import base_url, serving

pytestmark = pytest.mark.anyio


async def test_metrics_exposition(mpm: MPM) -> None:
    async with serving(mpm=mpm, metrics_path="/metrics") as server, httpx.AsyncClient(
        base_url=base_url(server)
    ) as c:
        for path in ("/hello", "/hello", "/nope", "/raise"):
            await c.get(path)
        r = await c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("asyncmpm_requests_total", (("status", "2xx"),))] == 2
    assert samples[("asyncmpm_requests_total", (("status", "4xx"),))] == 1
    assert samples[("asyncmpm_requests_total", (("status", "5xx"),))] == 1
    assert samples[("asyncmpm_response_body_bytes_total", (("status", "2xx"),))] == 28
    assert samples[("asyncmpm_request_duration_seconds_count", ())] == 4
    assert samples[("asyncmpm_idle_workers", ())] >= 1
    assert samples[("asyncmpm_processes", (("generation", "0"),))] >= 1
    assert samples[("asyncmpm_spawns_total", ())] >= 1
    assert ("asyncmpm_slots", (("state", "ready"),)) in samples
    assert ("asyncmpm_queue_wait_seconds_bucket", (("le", "+Inf"),)) in samples
