"""Configuration loading: defaults, durations, validation messages, includes, --check-config."""

import subprocess
import textwrap
from pathlib import Path

import pytest

from mitod.config import ConfigError, load_config
from mitod.config.durations import format_duration, parse_duration
from tests.harness import ROOT, child_env, mitod_command


def write(folder: Path, text: str, name: str = "mitod.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    return caught.value.errors


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0), ("250ms", 0.25),
    ("1h30m", 5400.0), ("1.5s", 1.5), (" 10s ", 10.0),
])
def test_duration_parses(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "30", "", "s", "5m 3s", "-5s", "1y", "5M"])
def test_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(90, "1m30s"), (0.25, "250ms"), (7200, "2h"),
                                           (1.5, "1.5s")])
def test_duration_formats(seconds, text):
    assert format_duration(seconds) == text


def test_empty_file_gives_design_defaults(tmp_path):
    config = load_config(str(write(tmp_path, "")))
    assert config.daemon.database == "/var/lib/mitod/mitod.db"
    assert config.daemon.pidfile == "/run/mitod/mitod.pid"
    assert config.daemon.socket == "/run/mitod/mitod.sock"
    assert config.daemon.workers == 4
    assert config.daemon.max_retries == 3
    assert config.daemon.shutdown_timeout == 20.0
    assert config.daemon.monitor_interval == 300.0
    assert config.daemon.queue_high_water == 100
    assert config.control.socket_mode == 0o660
    assert config.control.group == "mitod"
    assert config.log.level == "info"
    assert config.log.file == "/var/log/mitod/mitod.log"
    assert config.http.listen == "127.0.0.1:8787"
    assert config.http.enabled is True
    assert config.system.interval == 1800.0
    assert config.system.cpu_percent == 80
    assert config.system.memory_percent == 80
    assert config.system.disk_free_percent == 20
    assert config.system.disk_paths == ("/",)
    assert config.optimization.interval == 7200.0
    assert config.optimization.cleanup[0].path == "/var/cache/mitod"
    assert config.optimization.cleanup[0].older_than == 7 * 86400
    assert config.report.interval == 900.0
    assert config.sites == ()


def test_site_defaults(tmp_path):
    config = load_config(str(write(tmp_path, """
        [[site]]
        name = "homepage"
        url = "http://127.0.0.1:9/"
    """)))
    site = config.sites[0]
    assert site.job == "site:homepage"
    assert site.interval == 300.0
    assert site.timeout == 30.0
    assert site.method == "GET"
    assert site.expects(200) and site.expects(399)
    assert not site.expects(404)


def test_configuration_is_frozen(tmp_path):
    config = load_config(str(write(tmp_path, "")))
    with pytest.raises(AttributeError):
        config.daemon.workers = 8


def test_relative_paths_resolve_against_file(tmp_path):
    config = load_config(str(write(tmp_path, """
        [daemon]
        database = "data/mitod.db"
        [log]
        file = ""
    """)))
    assert config.daemon.database == str(tmp_path / "data" / "mitod.db")
    assert config.log.file == ""


ERROR_CASES = [
    ("[[site]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\n"
     "[[site]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\n"
     "[[site]]\nname = \"c\"\nurl = \"http://127.0.0.1/\"\ninterval = \"5 minutes\"\n",
     'mitod.toml: site[2].interval: expected a duration such as "30s", "5m" or "2h" of at '
     'least 1s, got "5 minutes"'),
    ("[daemon]\nworkers = 0\n", "mitod.toml: daemon.workers: expected an integer from 1 to 64, got 0"),
    ("[daemon]\nworkers = \"4\"\n", 'daemon.workers: expected an integer from 1 to 64, got "4"'),
    ("[daemon]\nshutdown_timout = \"5s\"\n",
     'daemon.shutdown_timout: unknown key; did you mean "shutdown_timeout"?'),
    ("[deamon]\n", "deamon: unknown section"),
    ("[log]\nlevel = \"verbose\"\n", 'log.level: expected one of "debug", "info", "warning", '
     '"error", got "verbose"'),
    ("[http]\nlisten = \"localhost\"\n", "http.listen: expected HOST:PORT"),
    ("[http]\nlisten = \"::1:8787\"\n", "write an IPv6 address in brackets"),
    ("[control]\nsocket_mode = 660\n", "control.socket_mode: expected an octal file mode"),
    ("[system]\ncpu_percent = 150\n", "system.cpu_percent: expected a number from 1 to 100, got 150"),
    ("[optimization]\ncleanup = [{ path = \"/\", older_than = \"1d\" }]\n",
     'optimization.cleanup[0].path: refusing to clean "/"'),
    ("[[site]]\nname = \"x\"\n", "site[0].url: missing"),
    ("[[site]]\nname = \"x\"\nurl = \"ftp://127.0.0.1/\"\n",
     'site[0].url: expected an http:// or https:// URL with a host, got "ftp://127.0.0.1/"'),
    ("[[site]]\nname = \"bad name\"\nurl = \"http://127.0.0.1/\"\n", "site[0].name: expected a name"),
    ("[[site]]\nname = \"x\"\nurl = \"http://127.0.0.1/\"\nexpect_status = [\"2xx\"]\n",
     'site[0].expect_status[0]: expected a status code from 100 to 599 or a range such as '
     '"200-299", got "2xx"'),
    ("[[site]]\nname = \"x\"\nurl = \"http://127.0.0.1/\"\n[[site]]\nname = \"x\"\n"
     "url = \"http://127.0.0.1/\"\n", 'site[1].name: duplicate site name "x"'),
    ("[[site]]\nname = \"x\"\nurl = \"http://127.0.0.1/\"\nretries = 3\n",
     "site[0].retries: unknown key"),
    ("[daemon]\nsocket = \"/tmp/" + "s" * 120 + "\"\n", "daemon.socket: path is"),
    ("this is not toml\n", "mitod.toml: invalid TOML"),
]


@pytest.mark.parametrize("text, expected", ERROR_CASES)
def test_invalid_configuration_names_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    found = errors_of(path)
    assert any(expected in line for line in found), found
    assert all(line.startswith(str(path)) for line in found), found


def test_every_error_is_reported(tmp_path):
    path = write(tmp_path, """
        [daemon]
        workers = 0
        max_retries = -1
        [log]
        level = "loud"
    """)
    found = errors_of(path)
    assert len(found) == 3


def test_secret_in_url_never_in_error(tmp_path):
    path = write(tmp_path, """
        [[site]]
        name = "x"
        url = "ftp://user:hunter2@127.0.0.1/"
    """)
    found = "\n".join(errors_of(path))
    assert "hunter2" not in found
    assert "site[0].url" in found


def test_include_adds_sites_and_keys(tmp_path):
    write(tmp_path, 'include = ["conf.d/*.toml"]\n[daemon]\nworkers = 2\n')
    write(tmp_path, '[[site]]\nname = "a"\nurl = "http://127.0.0.1/"\n', "conf.d/10-a.toml")
    write(tmp_path, '[[site]]\nname = "b"\nurl = "http://127.0.0.1/"\n[log]\nlevel = "debug"\n',
          "conf.d/20-b.toml")
    config = load_config(str(tmp_path / "mitod.toml"))
    assert [site.name for site in config.sites] == ["a", "b"]
    assert config.daemon.workers == 2
    assert config.log.level == "debug"
    assert len(config.files) == 3


def test_include_key_set_twice_names_both_files(tmp_path):
    write(tmp_path, 'include = ["conf.d/*.toml"]\n[daemon]\nworkers = 2\n')
    write(tmp_path, "[daemon]\nworkers = 3\n", "conf.d/extra.toml")
    found = errors_of(tmp_path / "mitod.toml")
    assert len(found) == 1
    assert str(tmp_path / "conf.d" / "extra.toml") in found[0]
    assert f"already set in {tmp_path / 'mitod.toml'}" in found[0]


def test_include_error_names_included_file(tmp_path):
    write(tmp_path, 'include = ["conf.d/*.toml"]\n')
    write(tmp_path, '[[site]]\nname = "a"\nurl = "http://127.0.0.1/"\ninterval = "soon"\n',
          "conf.d/a.toml")
    found = errors_of(tmp_path / "mitod.toml")
    assert found[0].startswith(f"{tmp_path / 'conf.d' / 'a.toml'}: site[0].interval")


def test_include_relative_path_uses_own_folder(tmp_path):
    write(tmp_path, 'include = ["conf.d/*.toml"]\n')
    write(tmp_path, '[daemon]\ndatabase = "db/x.db"\n', "conf.d/db.toml")
    config = load_config(str(tmp_path / "mitod.toml"))
    assert config.daemon.database == str(tmp_path / "conf.d" / "db" / "x.db")


def test_missing_file_says_what_to_do(tmp_path):
    found = errors_of(tmp_path / "absent.toml")
    assert "file not found" in found[0]
    assert "--config" in found[0]


def test_example_configuration_is_valid():
    config = load_config(str(ROOT / "etc" / "mitod.toml"))
    assert config.daemon.workers == 4


def test_example_documents_every_key():
    """Every key the loader reads appears in etc/mitod.toml."""
    from dataclasses import fields

    from mitod.config import loader

    text = (ROOT / "etc" / "mitod.toml").read_text()
    for section, section_class in loader.SECTIONS.items():
        assert f"[{section}]" in text
        for field in fields(section_class):
            assert f"\n{field.name} = " in text, f"{section}.{field.name} is not documented"
    for field in ("name", "url", "interval", "timeout", "method", "headers", "expect_status",
                  "verify_tls", "ca_file", "max_redirects"):
        assert f"# {field} = " in text, f"site.{field} is not documented"


def run_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(mitod_command("--check-config", "--config", str(path)),
                          capture_output=True, text=True, env=child_env(), timeout=30)


def test_check_config_ok(tmp_path):
    result = run_check(write(tmp_path, ""))
    assert result.returncode == 0
    assert "configuration OK" in result.stdout


def test_check_config_invalid_exits_78(tmp_path):
    path = write(tmp_path, "[daemon]\nworkers = 0\n[log]\nlevel = \"loud\"\n")
    result = run_check(path)
    assert result.returncode == 78
    assert "daemon.workers" in result.stderr
    assert "log.level" in result.stderr
    assert "Traceback" not in result.stderr


SITE_ERROR_CASES = [
    ('url = "http://127.0.0.1:0/"', "site[0].url: expected an http:// or https:// URL"),
    ('url = "http://127.0.0.1/"\nheaders = { "X Bad" = "v" }', 'site[0].headers.X Bad: invalid header name'),
    ('url = "http://127.0.0.1/"\nheaders = { Authorization = "Bearer s3cret\\n" }',
     "site[0].headers.Authorization: invalid header value"),
    ('url = "http://127.0.0.1/"\nverify_tls = false\nca_file = "ca.pem"',
     "site[0].ca_file: is ignored because verify_tls = false"),
]


@pytest.mark.parametrize("extra, expected", SITE_ERROR_CASES)
def test_invalid_site_entry(tmp_path, extra, expected):
    found = errors_of(write(tmp_path, f'[[site]]\nname = "x"\n{extra}\n'))
    assert any(expected in line for line in found), found
    assert not any("s3cret" in line for line in found)


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1/x?token=abc&page=2", "http://127.0.0.1/x?token=***&page=2"),
    ("https://user:pw@127.0.0.1:8443/p?api_key=zz", "https://user:***@127.0.0.1:8443/p?api_key=***"),
    ("http://127.0.0.1/?q=1", "http://127.0.0.1/?q=1"),
    ("http://[::1]:8080/?sig=1", "http://[::1]:8080/?sig=***"),
])
def test_redact_url(url, expected):
    from mitod.config import redact_url

    assert redact_url(url) == expected


def test_disk_paths_resolve_against_file(tmp_path):
    config = load_config(str(write(tmp_path, '[system]\ndisk_paths = [".", "/srv"]\n')))
    assert config.system.disk_paths == (str(tmp_path), "/srv")
