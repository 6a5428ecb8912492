"""HTTP/2 and TLS with real clients: httpx (h2 over TLS via ALPN, h2c prior knowledge), curl
and nghttp when installed, h2load for load, and a raw h2 client for every abuse case."""

from __future__ import annotations

import hashlib
import shutil
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import trustme
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)

from asyncmpm import MPM, Server
from tests.conftest import serving

ENHANCE_YOUR_CALM = 0xB


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ssl.SSLContext]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client context trusting it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    ca_path = path.parent / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return str(path), client


def url(server: Server, scheme: str = "http") -> str:
    host, port = server.addresses[0]
    return f"{scheme}://{host}:{port}"


# ----------------------------------------------------------------------------- real clients
async def test_httpx_over_tls_negotiates_h2(certs: tuple[str, ssl.SSLContext], mpm: MPM) -> None:
    certfile, client_ctx = certs
    async with serving(mpm=mpm, certfile=certfile) as server, httpx.AsyncClient(
            http2=True, verify=client_ctx, base_url=url(server, "https")) as c:
        r = await c.get("/environ/x?q=1", headers={"X-Test": "yes", "Cookie": "a=1"})
        assert r.http_version == "HTTP/2"
        env = r.json()
        assert env["SERVER_PROTOCOL"] == "HTTP/2"
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTPS"] == "on"
        assert env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
        assert env["PATH_INFO"] == "/environ/x"
        assert env["QUERY_STRING"] == "q=1"
        assert env["HTTP_X_TEST"] == "yes"
        assert env["HTTP_HOST"].startswith("127.0.0.1:")
        # A streamed upload of unknown length, and a large streamed download.
        payload = bytes(range(256)) * 4096 * 3  # 3 MiB: many windows' worth

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 100_000):
                yield payload[start:start + 100_000]

        r = await c.post("/upload", content=chunks())
        assert r.text == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        r = await c.get("/download?mb=4")
        assert r.status_code == 200
        assert len(r.content) == 4 * 1024 * 1024
        assert r.content[:256] == bytes(range(256))
    async with serving(mpm=mpm, certfile=certfile) as server, httpx.AsyncClient(
            http2=False, verify=client_ctx, base_url=url(server, "https")) as c:
        r = await c.get("/hello")  # ALPN http/1.1 on the same listener
        assert (r.http_version, r.text) == ("HTTP/1.1", "Hello, world!\n")


async def test_h2c_prior_knowledge_streams_use_slots_concurrently(mpm: MPM) -> None:
    spares: dict[str, Any] = (
        {"start_servers": 4, "min_spare_servers": 4} if mpm is MPM.PREFORK else {})
    async with serving(mpm=mpm, **spares) as server, httpx.AsyncClient(
            http1=False, http2=True, base_url=url(server)) as c:
        async with anyio.create_task_group() as tg:
            results: list[dict[str, Any]] = []

            async def fetch() -> None:
                r = await c.get("/whoami?sleep=1")
                assert r.http_version == "HTTP/2"
                results.append(r.json())

            for _ in range(4):
                tg.start_soon(fetch)
            # Four streams of one connection are served at the same time, in four slots.
            await server.wait_status(lambda s: s.busy_workers >= 4, timeout=30)
        assert len({(r["pid"], r["thread"]) for r in results}) == 4
        r = await c.post("/environ", content=b"body on h2c")
        assert r.json()["body"] == "body on h2c"
        assert r.json()["wsgi.url_scheme"] == "http"


async def test_errors_and_limits_per_stream() -> None:
    async with serving(timeout=1.0) as server, httpx.AsyncClient(
            http1=False, http2=True, base_url=url(server)) as c:
        assert (await c.get("/raise")).status_code == 500
        assert (await c.get("/crash")).status_code == 502
        assert (await c.get("/hang")).status_code == 504
        # (Timeout also bounds the wait for a slot: let the killed children be replaced.)
        await server.wait_status(lambda s: s.idle_workers >= 1, timeout=30)
        r = await c.get("/hello")  # the connection survived all of it
        assert (r.status_code, r.http_version) == (200, "HTTP/2")


@pytest.mark.parametrize("flag", ["--http2", "--http2-prior-knowledge"])
async def test_curl(flag: str, mpm: MPM) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    async with serving(mpm=mpm) as server:
        result = await anyio.run_process(
            [curl, "-sS", flag, "-w", "\n%{http_version}", f"{url(server)}/hello"], check=False)
    body, _, version = result.stdout.decode().rpartition("\n")
    assert result.returncode == 0, result.stderr
    assert (body, version) == ("Hello, world!\n", "2")


async def test_nghttp_upgrade_and_multiplexing(mpm: MPM) -> None:
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        pytest.skip("nghttp (nghttp2-client) is not installed")
    async with serving(mpm=mpm) as server:
        result = await anyio.run_process(
            [nghttp, "-nv", "-u", "-m", "5", f"{url(server)}/hello"], check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "HTTP/1.1 101 Switching Protocols" in out
    assert out.count(":status: 200") == 5


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_h2load_completes_without_failures(mpm: MPM) -> None:
    h2load = shutil.which("h2load")
    if h2load is None:
        pytest.skip("h2load (nghttp2-client) is not installed")
    async with serving(mpm=mpm, max_request_workers=16 if mpm is MPM.PREFORK else 32,
                       start_servers=4 if mpm is MPM.PREFORK else 2) as server:
        result = await anyio.run_process(
            [h2load, "-n", "20000", "-c", "10", "-m", "10", f"{url(server)}/hello"],
            check=False)
    out = result.stdout.decode()
    assert result.returncode == 0, out
    assert "20000 succeeded, 0 failed, 0 errored, 0 timeout" in out, out
    assert "status codes: 20000 2xx" in out, out


async def test_access_log_and_metrics_show_http2(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with serving(access_log=str(log), metrics_path="/metrics") as server, \
            httpx.AsyncClient(http1=False, http2=True, base_url=url(server)) as c:
        await c.get("/hello")
        metrics = (await c.get("/metrics")).text
    assert '"GET /hello HTTP/2.0" 200 14 ' in log.read_text()
    assert 'asyncmpm_connections_total{protocol="h2c"} 1.0' in metrics
    assert "asyncmpm_http2_streams_total 2.0" in metrics


async def test_no_http2_keeps_http1() -> None:
    async with serving(http2=False) as server:
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        result = await anyio.run_process(
            [curl, "-sS", "--http2", "-w", "%{http_version}", "-o", "/dev/null",
             f"{url(server)}/hello"], check=False)
    assert result.stdout == b"1.1"


# ----------------------------------------------------------------------------- raw h2 client
class RawH2:
    """A client speaking h2 over a plain socket, able to misbehave on purpose."""

    def __init__(self, stream: anyio.abc.SocketStream, **settings: int) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()})
        self.events: list[h2.events.Event] = []
        self.closed = False

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send(data)

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send(data)
        except (anyio.BrokenResourceError, OSError):
            self.closed = True

    async def read(self) -> list[h2.events.Event]:
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            self.closed = True
            return []
        new = self.conn.receive_data(data)
        self.events.extend(new)
        await self.flush()
        return new

    async def until(self, predicate: Any, timeout: float = 15) -> h2.events.Event | None:
        """Read until an event matches (returned), or the server closes (None)."""
        with anyio.fail_after(timeout):
            for ev in self.events:
                if predicate(ev):
                    return ev
            while not self.closed:
                for ev in await self.read():
                    if predicate(ev):
                        return ev
        return None

    def request_headers(self, path: str = "/hello") -> list[tuple[str, str]]:
        return [(":method", "GET"), (":path", path), (":scheme", "http"),
                (":authority", "127.0.0.1")]


@asynccontextmanager
async def raw_h2(server: Server, **settings: int) -> AsyncIterator[RawH2]:
    host, port = server.addresses[0]
    async with await anyio.connect_tcp(host, port) as stream:
        client = RawH2(stream, **settings)
        await client.start()
        yield client


def goaway(ev: object) -> bool:
    return isinstance(ev, h2.events.ConnectionTerminated)


async def _still_serves(server: Server) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, base_url=url(server)) as c:
        r = await c.get("/hello")
        assert (r.status_code, r.http_version) == (200, "HTTP/2")


def _frame(frame: Any) -> bytes:
    return bytes(frame.serialize())


@pytest.mark.parametrize("attack", ["settings", "ping", "priority", "empty-continuation"])
async def test_floods_end_in_goaway_enhance_your_calm(attack: str) -> None:
    async with serving() as server:
        async with raw_h2(server) as client:
            if attack == "settings":
                flood = _frame(SettingsFrame(0, settings={0x3: 100})) * 300
            elif attack == "ping":
                flood = b"".join(_frame(PingFrame(0, opaque_data=b"%08d" % i))
                                 for i in range(300))
            elif attack == "priority":
                flood = b"".join(_frame(PriorityFrame(2 * i + 1, depends_on=0))
                                 for i in range(3000))
            else:
                block = client.conn.encoder.encode(client.request_headers())
                flood = _frame(HeadersFrame(1, data=block[:1]))
                flood += _frame(ContinuationFrame(1, data=b"")) * 200
            await client.send_raw(flood)
            ev = await client.until(goaway)
            assert ev is not None, "no GOAWAY"
            assert isinstance(ev, h2.events.ConnectionTerminated)
            assert ev.error_code == ENHANCE_YOUR_CALM
        await _still_serves(server)


async def test_continuation_flood_with_data() -> None:
    """CVE-2024-27316: header blocks that never end are cut off, not buffered."""
    async with serving() as server:
        async with raw_h2(server) as client:
            flood = _frame(HeadersFrame(1, data=b""))
            flood += b"".join(_frame(ContinuationFrame(1, data=b"\x40\x01a\x01b" * 300))
                              for _ in range(100))
            await client.send_raw(flood)
            ev = await client.until(goaway)
            assert isinstance(ev, h2.events.ConnectionTerminated)
            assert ev.error_code == ENHANCE_YOUR_CALM
        await _still_serves(server)


async def test_rapid_reset_ends_in_goaway() -> None:
    """CVE-2023-44487: streams opened and cancelled at once, far past any sane rate."""
    async with serving() as server:
        async with raw_h2(server) as client:
            await client.until(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged))
            for i in range(1500):
                sid = 2 * i + 1
                client.conn.send_headers(sid, client.request_headers("/whoami?sleep=0.2"),
                                         end_stream=True)
                client.conn.reset_stream(sid)
            await client.flush()
            ev = await client.until(goaway)
            assert isinstance(ev, h2.events.ConnectionTerminated)
            assert ev.error_code == ENHANCE_YOUR_CALM
        await _still_serves(server)
        # Every slot comes back: the cancelled streams did not leak any.
        await server.wait_status(lambda s: s.busy_workers == 0, timeout=30)


async def test_hpack_bomb_ends_in_goaway() -> None:
    async with serving(h2_max_header_list_size=16384) as server:
        async with raw_h2(server) as client:
            # One 4 KiB header indexed once, then referenced by one byte each: small on the
            # wire, 80 KiB decoded.
            headers = client.request_headers() + [("x-bomb", "a" * 4000)] * 20
            client.conn.send_headers(1, headers, end_stream=True)
            await client.flush()
            ev = await client.until(goaway)
            assert isinstance(ev, h2.events.ConnectionTerminated)
            assert ev.error_code in (ENHANCE_YOUR_CALM, 0x9)  # or COMPRESSION_ERROR
        await _still_serves(server)


async def test_settings_advertise_the_limits() -> None:
    async with serving(h2_max_session_streams=7, h2_window_size=32768) as server, \
            raw_h2(server) as client:
        ev = await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert ev is not None
        remote = client.conn.remote_settings
        assert remote.max_concurrent_streams == 7
        assert remote.initial_window_size == 32768
        assert remote.enable_push == 0


async def test_zero_window_stall_resets_the_stream_and_frees_the_slot() -> None:
    async with serving(timeout=1.0) as server, raw_h2(server, initial_window_size=0) as client:
        client.conn.send_headers(1, client.request_headers("/download?mb=2"),
                                 end_stream=True)
        await client.flush()
        ev = await client.until(lambda e: isinstance(e, h2.events.StreamReset))
        assert isinstance(ev, h2.events.StreamReset)
        assert ev.stream_id == 1
        assert ev.error_code == 0x8  # CANCEL
        await server.wait_status(lambda s: s.busy_workers == 0, timeout=10)
        # The connection itself goes on.
        client.conn.send_headers(3, client.request_headers("/hello"), end_stream=True)
        client.conn.increment_flow_control_window(1 << 20, stream_id=None)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        await client.flush()
        ended = await client.until(lambda e: isinstance(e, h2.events.StreamEnded)
                                   and e.stream_id == 3)
        assert ended is not None


async def test_client_reset_aborts_the_child_and_keeps_the_connection() -> None:
    async with serving() as server:
        async with raw_h2(server) as client:
            client.conn.send_headers(1, client.request_headers("/stream"), end_stream=True)
            await client.flush()
            await client.until(lambda e: isinstance(e, h2.events.ResponseReceived))
            client.conn.reset_stream(1)
            client.conn.send_headers(3, client.request_headers("/hello"), end_stream=True)
            await client.flush()
            ev = await client.until(lambda e: isinstance(e, h2.events.StreamEnded)
                                    and e.stream_id == 3)
            assert ev is not None
        await server.wait_status(lambda s: s.busy_workers == 0, timeout=10)


async def test_stop_sends_goaway_and_open_streams_finish() -> None:
    # nghttp2's client, because h2's own refuses frames of open streams after a GOAWAY.
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        pytest.skip("nghttp (nghttp2-client) is not installed")
    out: list[str] = []
    async with serving() as server:

        async def fetch() -> None:
            result = await anyio.run_process(
                [nghttp, "-nv", f"{url(server)}/whoami?sleep=1"], check=False)
            out.append(result.stdout.decode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch)
            await server.wait_status(lambda s: s.busy_workers >= 1, timeout=10)
            server.stop()
    assert "recv GOAWAY frame" in out[0]
    assert "error_code=NO_ERROR(0x00)" in out[0]
    assert ":status: 200" in out[0]  # the stream in flight finished after the GOAWAY
    assert out[0].index("recv GOAWAY") < out[0].index(":status: 200")


def test_tls_config_errors(tmp_path: Path) -> None:
    from asyncmpm import Config, ConfigError, ListenAddress
    from asyncmpm.tls import make_ssl_context

    with pytest.raises(ConfigError, match="Listen"):
        Config(listen=(ListenAddress.parse("https://127.0.0.1:0"),))
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match="SSLCertificateFile"):
        make_ssl_context(Config(certfile=str(bogus)))
    mixed = Config(certfile=str(bogus), listen=(ListenAddress.parse("http://127.0.0.1:1"),
                                                ListenAddress.parse("127.0.0.1:2")))
    assert [mixed.tls(a) for a in mixed.listen] == [False, True]


async def test_failed_handshakes_cost_only_their_connection(
        certs: tuple[str, ssl.SSLContext]) -> None:
    certfile, client_ctx = certs
    async with serving(certfile=certfile, tls_handshake_timeout=0.5) as server:
        host, port = server.addresses[0]
        # Plain HTTP to a TLS port, and a client that never says hello.
        async with await anyio.connect_tcp(host, port) as bad:
            await bad.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            async with await anyio.connect_tcp(host, port) as silent:
                async with httpx.AsyncClient(http2=True, verify=client_ctx) as c:
                    r = await c.get(f"https://{host}:{port}/hello")
                    assert r.status_code == 200
                # The silent one is dropped once TLSHandshakeTimeout passes.
                with anyio.fail_after(10), pytest.raises(
                        (anyio.EndOfStream, anyio.BrokenResourceError)):
                    await silent.receive()


async def test_client_certificates(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    client_cert = ca.issue_cert("alice@example.com", common_name="alice")
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    client_cert.configure_cert(with_cert)
    without = ssl.create_default_context()
    ca.configure_trust(without)
    async with serving(certfile=str(server_pem), ca_certs=str(ca_pem)) as server:
        async with httpx.AsyncClient(http2=True, verify=with_cert) as c:
            r = await c.get(f"{url(server, 'https')}/environ")
            assert r.json()["SSL_CLIENT_S_DN"].startswith("CN=alice,OU=")
        with pytest.raises(httpx.HTTPError):  # SSLVerifyClient require
            async with httpx.AsyncClient(http2=True, verify=without) as c:
                await c.get(f"{url(server, 'https')}/hello")
    async with serving(certfile=str(server_pem), ca_certs=str(ca_pem),
                       verify_client="optional") as server, \
            httpx.AsyncClient(http2=True, verify=without) as c:
        env = (await c.get(f"{url(server, 'https')}/environ")).json()
        assert "SSL_CLIENT_S_DN" not in env
        assert env["HTTPS"] == "on"


async def test_idle_connection_gets_goaway_after_keep_alive_timeout() -> None:
    async with serving(keep_alive_timeout=0.3) as server, raw_h2(server) as client:
        client.conn.send_headers(1, client.request_headers("/hello"), end_stream=True)
        await client.flush()
        assert await client.until(lambda e: isinstance(e, h2.events.StreamEnded))
        ev = await client.until(goaway)  # idle past KeepAliveTimeout: a clean GOAWAY
        assert isinstance(ev, h2.events.ConnectionTerminated)
        assert (ev.error_code, ev.last_stream_id) == (0, 1)
    async with serving(keep_alive=False) as server, httpx.AsyncClient(
            http1=False, http2=True, base_url=url(server)) as c:
        for _ in range(3):  # each on a new connection after the previous one's GOAWAY
            assert (await c.get("/hello")).status_code == 200


async def test_unreadable_http2_settings_stay_on_http1() -> None:
    async with serving() as server, await anyio.connect_tcp(*server.addresses[0]) as s:
        await s.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABk=x\r\n\r\n")
        with anyio.fail_after(10):
            reply = await s.receive()
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
