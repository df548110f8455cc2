"""Read the main TOML file and its includes into one validated, frozen :class:`Config`.

Included files (``include = ["conf.d/*.toml"]``, globs relative to the main
file, read in sorted order) may add ``[[site]]`` entries and set keys that no
other file sets. A key set in two files is an error naming both files.
"""

import glob
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mitod.config.control import ControlConfig
from mitod.config.daemon import DaemonConfig
from mitod.config.errors import ConfigError
from mitod.config.http import HttpConfig
from mitod.config.log import LogConfig
from mitod.config.optimization import OptimizationConfig
from mitod.config.report import ReportConfig
from mitod.config.site import SiteConfig
from mitod.config.system import SystemConfig
from mitod.config.table import Table, describe_value

DEFAULT_CONFIG_PATH = "/etc/mitod/mitod.toml"

SECTIONS = {
    "daemon": DaemonConfig,
    "control": ControlConfig,
    "log": LogConfig,
    "http": HttpConfig,
    "system": SystemConfig,
    "optimization": OptimizationConfig,
    "report": ReportConfig,
}

# Linux limits sun_path to 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class Config:
    path: str
    files: tuple[str, ...]
    daemon: DaemonConfig
    control: ControlConfig
    log: LogConfig
    http: HttpConfig
    system: SystemConfig
    optimization: OptimizationConfig
    report: ReportConfig
    sites: tuple[SiteConfig, ...]

    def site(self, name: str) -> SiteConfig | None:
        return next((site for site in self.sites if site.name == name), None)


@dataclass
class _Section:
    values: dict
    origins: dict


def load_config(path: str) -> Config:
    """Load and validate the configuration at ``path``; raise ConfigError listing every error."""
    errors: list[str] = []
    main_path = Path(path)
    main = _read_toml(main_path, errors)
    if main is None:
        raise ConfigError(errors)

    sections: dict[str, _Section] = {}
    sites: list[tuple[dict, Path, int]] = []
    include_files = _expand_includes(main, main_path, errors)
    for file_path, document in [(main_path, main)] + [
            (included, _read_toml(included, errors)) for included in include_files]:
        if document is not None:
            _merge(document, file_path, sections, sites, errors, is_main=file_path is main_path)

    config = _build(main_path, include_files, sections, sites, errors)
    if errors:
        raise ConfigError(errors)
    return config


def _read_toml(path: Path, errors: list[str]) -> dict | None:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        errors.append(f"{path}: file not found; pass --config PATH or copy etc/mitod.toml there")
    except PermissionError:
        errors.append(f"{path}: permission denied; run as a user who may read it")
    except IsADirectoryError:
        errors.append(f"{path}: is a folder, expected a TOML file")
    except tomllib.TOMLDecodeError as error:
        errors.append(f"{path}: invalid TOML: {error}")
    except UnicodeDecodeError as error:
        errors.append(f"{path}: invalid UTF-8: {error}")
    return None


def _expand_includes(main: dict, main_path: Path, errors: list[str]) -> list[Path]:
    patterns = main.get("include", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        errors.append(f"{main_path}: include: expected a list of glob patterns such as "
                      f'["conf.d/*.toml"], got {describe_value(patterns)}')
        return []
    base = main_path.parent
    files: list[Path] = []
    for pattern in patterns:
        full = os.path.join(base, os.path.expanduser(pattern))
        for match in sorted(glob.glob(full)):
            candidate = Path(match)
            if candidate.is_file() and candidate not in files and candidate != main_path:
                files.append(candidate)
    return files


def _merge(document: dict, file_path: Path, sections: dict[str, _Section],
           sites: list, errors: list[str], is_main: bool) -> None:
    for key, value in document.items():
        if key == "include":
            if not is_main:
                errors.append(f"{file_path}: include: only the main file may include others")
            continue
        if key == "site":
            _merge_sites(value, file_path, sites, errors)
            continue
        if key not in SECTIONS:
            errors.append(f"{file_path}: {key}: unknown section; expected one of "
                          + ", ".join(sorted(list(SECTIONS) + ["site", "include"])))
            continue
        if not isinstance(value, dict):
            errors.append(f"{file_path}: {key}: expected a table, got {describe_value(value)}")
            continue
        section = sections.setdefault(key, _Section({}, {}))
        for name, item in value.items():
            if name in section.values:
                errors.append(f"{file_path}: {key}.{name}: already set in "
                              f"{section.origins[name]}; set it in one file only")
                continue
            section.values[name] = item
            section.origins[name] = file_path


def _merge_sites(value, file_path: Path, sites: list, errors: list[str]) -> None:
    if not isinstance(value, list):
        errors.append(f"{file_path}: site: expected [[site]] tables, got {describe_value(value)}")
        return
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            errors.append(f"{file_path}: site[{index}]: expected a table, "
                          f"got {describe_value(entry)}")
            continue
        sites.append((entry, file_path, index))


def _build(main_path: Path, include_files: list[Path], sections: dict[str, _Section],
           sites: list, errors: list[str]) -> Config:
    built = {}
    for name, section_class in SECTIONS.items():
        section = sections.get(name, _Section({}, {}))
        table = Table(section.values, name, section.origins, main_path, errors)
        built[name] = section_class.from_table(table)
        table.finish()

    site_configs = []
    seen: dict[str, str] = {}
    for entry, file_path, index in sites:
        table = Table(entry, f"site[{index}]", {}, file_path, errors)
        site = SiteConfig.from_table(table)
        table.finish()
        where = f"{file_path}: site[{index}]"
        if site.name and site.name in seen:
            errors.append(f"{where}.name: duplicate site name \"{site.name}\", already used by "
                          f"{seen[site.name]}; give each site its own name")
            continue
        seen[site.name] = where
        site_configs.append(site)

    _check_socket_path(built["daemon"], sections, main_path, errors)
    return Config(path=str(main_path), files=tuple(str(p) for p in [main_path] + include_files),
                  sites=tuple(site_configs), **built)


def _check_socket_path(daemon: DaemonConfig, sections: dict[str, _Section],
                       main_path: Path, errors: list[str]) -> None:
    size = len(os.fsencode(daemon.socket))
    if size > MAX_SOCKET_PATH_BYTES:
        origin = sections.get("daemon", _Section({}, {})).origins.get("socket", main_path)
        errors.append(f"{origin}: daemon.socket: path is {size} bytes, but a Unix socket path "
                      f"may have at most {MAX_SOCKET_PATH_BYTES}; choose a shorter path")
