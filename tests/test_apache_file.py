"""httpd.conf files load as httpd reads them: Debian's stock MPM files and apache2.conf
(copied into tests/httpd/ from Debian's apache2 2.4 package), and the syntax rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncmpm import MPM, Config, ConfigError
from asyncmpm.config.apache_file import load_config
from asyncmpm.config.argv import parse_command

HTTPD = Path(__file__).resolve().parent / "httpd"


@pytest.mark.parametrize(
    ("name", "mpm", "expected"),
    [
        ("mpm_prefork.conf", MPM.PREFORK,
         {"start_servers": 5, "min_spare_servers": 5, "max_spare_servers": 10,
          "max_request_workers": 150, "max_connections_per_child": 0}),
        ("mpm_worker.conf", MPM.WORKER,
         {"start_servers": 2, "min_spare_threads": 25, "max_spare_threads": 75,
          "thread_limit": 64, "threads_per_child": 25, "max_request_workers": 150,
          "max_connections_per_child": 0}),
    ],
)
def test_debian_mpm_files_load_unchanged(name: str, mpm: MPM, expected: dict[str, int]) -> None:
    config = load_config(HTTPD / name, Config(mpm=mpm))
    for field, value in expected.items():
        assert getattr(config, field) == value, field
    limits, _ = config.limits()
    assert limits.max_request_workers == 150


def test_debian_apache2_conf_loads_with_notices() -> None:
    notices: list[str] = []
    config = load_config(HTTPD / "apache2.conf", Config(), notices=notices)
    assert config.timeout == 300
    assert config.keep_alive is True
    assert config.max_keep_alive_requests == 100
    assert config.keep_alive_timeout == 5
    assert config.log_level == "warn"
    assert [str(a) for a in config.listen] == ["http://0.0.0.0:80"]  # from ports.conf via Include
    assert any("AH00111" in n and "APACHE_RUN_DIR" in n for n in notices)
    ignored = [n for n in notices if "is ignored" in n]
    assert any(n.startswith("Require ") for n in ignored)
    assert len([n for n in ignored if n.startswith("Require ")]) == 1  # reported once


def test_syntax(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("KeepAliveTimeout 250ms\n")
    (tmp_path / "conf.d" / "b.conf").write_text("MaxKeepAliveRequests 7\n")
    main = tmp_path / "httpd.conf"
    main.write_text(
        "# a comment\n"
        "ServerRoot " + str(tmp_path) + "\n"
        "Define PORT 9090\n"
        "Listen 127.0.0.1:${PORT}\n"
        "timeout \\\n   42\n"
        "<IfModule mpm_prefork_module>\n  MaxClients 12\n</IfModule>\n"
        "<IfModule mpm_worker_module>\n  ThreadsPerChild 10\n</IfModule>\n"
        "<IfModule !mpm_event_module>\n  MaxRequestsPerChild 500\n</IfModule>\n"
        "<IfDefine FAST>\n  StartServers 9\n</IfDefine>\n"
        "<IfDefine !FAST>\n  StartServers 3\n</IfDefine>\n"
        "IncludeOptional conf.d/*.conf\n"
        "IncludeOptional missing/*.conf\n"
        "<Location /server-status>\n  SetHandler server-status\n</Location>\n"
        'WSGIScriptAlias /app "' + str(tmp_path / "site.py") + '"\n'
    )
    notices: list[str] = []
    config = load_config(main, Config(), notices=notices)
    assert [str(a) for a in config.listen] == ["http://127.0.0.1:9090"]
    assert config.timeout == 42
    assert config.max_request_workers == 12
    assert config.threads_per_child is None
    assert config.max_connections_per_child == 500
    assert config.start_servers == 3
    assert config.keep_alive_timeout == 0.25
    assert config.max_keep_alive_requests == 7
    assert config.status_path == "/server-status"
    assert (config.root_path, config.app) == ("/app", str(tmp_path / "site.py"))
    assert any(n.startswith("AH00545") for n in notices)  # MaxClients is deprecated
    assert any(n.startswith("AH00324") for n in notices)
    fast = load_config(main, Config(), defines={"FAST"})
    assert fast.start_servers == 9


@pytest.mark.parametrize(
    ("text", "directive", "line"),
    [
        ("KeepAlive On\nMaxRequestWorkers many\n", "MaxRequestWorkers", 2),
        ("\n\nKeepAlive maybe\n", "KeepAlive", 3),
        ("<IfModule mpm_prefork_module>\nStartServers 2\n", "<ifmodule>", 1),
        ("Listen nowhere:x\n", "Listen", 1),
        ("Include does-not-exist.conf\n", "Include", 1),
        ("ListenBacklog 0\n", "ListenBacklog", 1),
    ],
)
def test_errors_name_the_directive_and_file_line(tmp_path: Path, text: str, directive: str,
                                                 line: int) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, Config())
    assert exc.value.directive == directive
    assert (exc.value.path, exc.value.line) == (str(path), line)
    assert f"{path}:{line}" in str(exc.value)


def test_strict_config_rejects_unknown_directives(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text("Options Indexes\n")
    assert load_config(path, Config()).timeout == 60
    with pytest.raises(ConfigError, match="Options"):
        load_config(path, Config(), strict=True)


def test_command_line_overrides_the_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.conf"
    path.write_text("Timeout 30\nMaxRequestWorkers 20\n")
    config, _ = parse_command(["--config", str(path), "--timeout", "5"])
    assert (config.timeout, config.max_request_workers) == (5, 20)
    path.write_text("Timeout never\n")
    with pytest.raises(SystemExit) as exc:
        parse_command(["--config", str(path)])
    assert exc.value.code == 2
    assert f"{path}:1: Timeout" in capsys.readouterr().err


def test_cli_configtest_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text("MaxClients 300\n")
    config, command = parse_command(["-t", "--config", str(path)])
    assert config.max_request_workers == 300
    assert any(n.startswith("AH00545") for n in command.notices)
    _, warnings = config.limits()
    assert any(w.startswith("AH00180") for w in warnings)  # 300 > ServerLimit 256


@pytest.mark.parametrize("mpm", ["prefork", "worker"])
def test_example_config(mpm: str) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "httpd.conf"
    config, _ = parse_command(["--config", str(example), "--mpm", mpm])
    assert [str(a) for a in config.listen] == ["http://127.0.0.1:8080"]
    assert config.status_path == "/server-status"
    assert config.app == "examples/hello_app.py"
    limits, warnings = config.limits()
    assert not warnings
    assert limits.max_request_workers == 150


def test_log_directives(tmp_path: Path) -> None:
    path = tmp_path / "logs.conf"
    path.write_text(
        f"ServerRoot {tmp_path}\n"
        'LogFormat "%h %>s %D" timing\n'
        "CustomLog logs/access.log timing\n"
        "ErrorLog /var/log/asyncmpm/error.log\n"
        "PidFile run/httpd.pid\n"
    )
    config = load_config(path, Config())
    assert config.access_log == str(tmp_path / "logs/access.log")  # relative to ServerRoot
    assert config.access_log_format == "%h %>s %D"
    assert config.error_log == "/var/log/asyncmpm/error.log"
    assert config.pid_file == str(tmp_path / "run/httpd.pid")
    path.write_text('CustomLog "|/usr/bin/rotatelogs x 86400" combined\nErrorLog syslog:local7\n')
    notices: list[str] = []
    config = load_config(path, Config(), notices=notices)
    assert (config.access_log, config.error_log) == (None, None)
    assert [n.split()[0] for n in notices] == ["CustomLog", "ErrorLog"]
    path.write_text("\n" 'LogFormat "%h %Y" broken\n')
    with pytest.raises(ConfigError, match=rf"{path}:2: LogFormat: unrecognized"):
        load_config(path, Config())


def test_tls_and_http2_directives(tmp_path: Path) -> None:
    path = tmp_path / "ssl.conf"
    path.write_text(
        f"ServerRoot {tmp_path}\n"
        "Listen 127.0.0.1:8443 https\n"
        "Listen 127.0.0.1:8080\n"
        "SSLEngine on\n"
        "SSLCertificateFile certs/server.pem\n"
        "SSLCertificateKeyFile /etc/ssl/private/server.key\n"
        "SSLCACertificateFile certs/ca.pem\n"
        "SSLVerifyClient optional\n"
        "Protocols http/1.1\n"
        "H2MaxSessionStreams 50\n"
        "H2WindowSize 131072\n"
    )
    config = load_config(path, Config())
    assert [str(a) for a in config.listen] == ["https://127.0.0.1:8443",
                                               "http://127.0.0.1:8080"]
    assert config.certfile == str(tmp_path / "certs/server.pem")
    assert config.keyfile == "/etc/ssl/private/server.key"
    assert config.ca_certs == str(tmp_path / "certs/ca.pem")
    assert config.verify_client == "optional"
    assert config.http2 is False
    assert (config.h2_max_session_streams, config.h2_window_size) == (50, 131072)
    assert [config.tls(a) for a in config.listen] == [True, False]  # as httpd: by protocol
    path.write_text("Listen 127.0.0.1:8443 https\n")
    with pytest.raises(ConfigError, match=rf"{path}:1: Listen: an https listener needs"):
        load_config(path, Config())
    path.write_text("Protocols h2 h2c\n")
    with pytest.raises(ConfigError, match=r"http/1\.1"):
        load_config(path, Config())
