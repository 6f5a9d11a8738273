"""Running the registry under gunicorn, embedded with ``BaseApplication``.

gunicorn hands the app ``wsgi.input`` as a stream (no spooling, no body cap of its own)
and serves files with ``sendfile``. Its worker here is
:class:`~modelpack_registry.web.worker.RegistryWorker`: an event loop reads each request
head (with a deadline) and only then hands the request to a thread, so a slow or
hostile client holds no thread while its request arrives. Each worker process builds its own
:class:`~modelpack_registry.web.app.RegistryApp`; they share nothing but the data folder
and notice each other's writes through ``DATA/generation``.

Before gunicorn starts, everything a user can get wrong is checked so it fails with one
line instead of a log: the data folder is writable, the htpasswd file loads, the port is
free, and an address other than loopback is not served without credentials.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import resource
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from modelpack_registry.access.auth import Htpasswd
from modelpack_registry.access.policy import Access
from modelpack_registry.errors import ConfigError, StorageError
from modelpack_registry.storage import DataDir
from modelpack_registry.web.app import RegistryApp, legacy_app
from modelpack_registry.web.upload import UploadLimits
from modelpack_registry.web.worker import Timeouts

__all__ = [
    "ServeConfig",
    "default_mirror_dir",
    "is_loopback",
    "mirror_dir",
    "raise_fd_limit",
    "serve",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``modelpack-registry serve``."""

    data: Path
    host: str = "127.0.0.1"
    port: int = 8080
    htpasswd: Path | None = None
    insecure: bool = False
    workers: int = 1
    threads: int = 16
    max_upload_size: int = 20 * 1024**3
    admins: tuple[str, ...] = ()
    protect_reads: bool = False
    # Answer /packages/<file> with a redirect to the store's download URL when it has
    # one (a bucket's presigned GET); set by the s3 options.
    storage_redirect: bool = False
    graceful_timeout: int = 30
    """Seconds a stopping worker lets in-flight requests (a large upload) finish."""
    access_log: bool = False
    """One line per request on stdout, in :data:`ACCESS_LOG_FORMAT`."""
    upstream: str | None = None
    """A simple index to proxy for every name that is not private (upstream/)."""
    upstream_ttl: float = 600.0
    """Seconds an upstream project page is served from the cache before it is asked again."""
    header_timeout: float = 20.0
    """Seconds a request's head may take to arrive (then 408); no thread waits for it."""
    body_timeout: float = 60.0
    """Seconds a body read or an answer write may go without progress."""
    min_upload_rate: int = 10 * 1024
    """Bytes/s an upload must average after its first ``body_timeout`` seconds (0: off)."""
    max_connections: int = 4096
    """Open connections per worker process (gunicorn's ``worker_connections``)."""
    storage: str | None = None
    """``s3://BUCKET/PREFIX``: the state lives in that bucket, not in :attr:`data`."""
    s3_endpoint: str | None = None
    """An S3-compatible service's URL (default: AWS)."""
    s3_region: str | None = None
    s3_url_ttl: int = 300
    """Seconds a redirect's presigned download URL stays valid."""
    refresh_interval: float | None = None
    """Seconds between two checks for other replicas' changes (None: 0.25 on a folder,
    1 on a bucket; see :mod:`modelpack_registry.index`)."""
    mirror_dir: Path | None = None
    """The upstream cache (``--upstream``); None: ``DATA/mirror`` on a folder, else
    :func:`default_mirror_dir`."""


#: client address, Basic-auth user (``__token__`` for a token; never the password),
#: time, request line, status, body bytes, milliseconds, user agent
ACCESS_LOG_FORMAT = '%(h)s %(u)s %(t)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s"'


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind_address(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StorageError(
                f"cannot listen on {_bind_address(host, port)}: {exc.strerror or exc}"
                + (" (is another server running?)" if exc.errno == 98 else "")
            ) from exc


def prepare(config: ServeConfig) -> tuple[DataDir, Htpasswd | None]:
    """All checks done before serving.

    :raises ConfigError: unsafe address without credentials, or a bad htpasswd file.
    :raises StorageError: data folder not writable, or the port is taken.
    """
    if config.htpasswd is None and not config.insecure and not is_loopback(config.host):
        raise ConfigError(
            f"refusing to accept anonymous uploads on {config.host}, which is not a "
            "loopback address: give --htpasswd FILE, or --insecure to allow it anyway"
        )
    if config.htpasswd is None and (config.admins or config.protect_reads):
        flag = "--admin" if config.admins else "--protect-reads"
        raise ConfigError(f"{flag} needs --htpasswd FILE (the users to check)")
    if config.upstream is not None:
        from modelpack_registry.upstream import check_url

        try:
            check_url(config.upstream)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if config.upstream_ttl < 0:
            raise ConfigError("--upstream-ttl must be 0 or more seconds")
    if config.s3_url_ttl < 1 or config.s3_url_ttl > 7 * 24 * 3600:
        raise ConfigError("--s3-url-ttl must be 1 to 604800 seconds (S3 signs for 7 days at most)")
    if config.refresh_interval is not None and config.refresh_interval < 0:
        raise ConfigError("--refresh-interval must be 0 or more seconds")
    if config.workers < 1 or config.threads < 1:
        raise ConfigError("--workers and --threads must be at least 1")
    if min(config.header_timeout, config.body_timeout) <= 0 or config.max_connections < 1:
        raise ConfigError("--header-timeout, --body-timeout and --max-connections must be positive")
    htpasswd = Htpasswd(config.htpasswd) if config.htpasswd is not None else None
    for admin in config.admins:
        if htpasswd is not None and not htpasswd.has_user(admin):
            log.warning("--admin %s: no such user in %s (yet)", admin, config.htpasswd)
    data = open_data(config, check=True)
    data.ensure()
    if config.upstream is not None:
        mirror = mirror_dir(config)
        try:
            mirror.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=mirror, prefix=".probe-")
            probe.close()
        except OSError as exc:
            raise StorageError(
                f"the upstream cache {mirror} is not writable: {exc.strerror or exc}; "
                "give --mirror-dir DIR (a folder the registry may write)"
            ) from exc
    for name in data.sweep_uploads():
        log.warning("removed an abandoned upload: %s", name)
    _check_port(config.host, config.port)
    return data, htpasswd


def open_data(config: ServeConfig, *, check: bool = False) -> DataDir:
    """The served :class:`DataDir`: the folder :attr:`~ServeConfig.data`, or the bucket
    :attr:`~ServeConfig.storage` (``check``: that it exists and answers).

    :raises ConfigError: a bad ``--storage`` URL, or boto3 is missing.
    :raises StorageError: the endpoint is unreachable or the bucket missing.
    """
    from modelpack_registry.storage.location import Location
    from modelpack_registry.storage.location import open_data as open_location

    location = Location(config.storage or str(config.data), config.s3_endpoint, config.s3_region)
    return open_location(location, check=check)


def mirror_dir(config: ServeConfig) -> Path:
    """Where the upstream cache lives: ``--mirror-dir``, ``DATA/mirror`` on a folder,
    else :func:`default_mirror_dir`."""
    if config.mirror_dir is not None:
        return config.mirror_dir
    if config.storage is None:
        return config.data / "mirror"
    return default_mirror_dir(config.storage)


def default_mirror_dir(storage: str) -> Path:
    """A bucket's upstream cache on local disk: ``$XDG_CACHE_HOME`` (``~/.cache``)
    ``/modelpack-registry/mirror-<hash of the storage URL>``, so that two registries on
    one machine do not share pages; under the system temp folder instead if that cannot
    be created (the image's user has no home, and its root file system is read-only)."""
    name = f"mirror-{hashlib.sha256(storage.rstrip('/').encode()).hexdigest()[:12]}"
    base = os.environ.get("XDG_CACHE_HOME") or (
        str(Path(os.environ["HOME"]) / ".cache") if os.environ.get("HOME") else ""
    )
    if base:
        folder = Path(base) / "modelpack-registry" / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            pass
    return Path(tempfile.gettempdir()) / f"modelpack-registry-{os.getuid()}" / name


def raise_fd_limit(need: int) -> None:
    """Raise the soft open-file limit to ``need`` (up to the hard limit), or warn.

    Every open connection is a file descriptor, and many systems start processes with a
    soft limit of 1024; the hard limit is usually far higher and a process may raise its
    soft limit up to it. The worker processes inherit the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            log.warning(
                "the open-file limit is %d (hard limit), below the %d that --max-connections "
                "needs: a worker will hold fewer connections; raise it (ulimit -Hn, "
                "docker run --ulimit nofile=%d, systemd LimitNOFILE=)",
                target,
                need,
                need,
            )


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: ServeConfig, options: dict[str, Any]) -> None:
        self.config = config
        self.options = options
        self.timeouts = Timeouts(header=config.header_timeout, body=config.body_timeout)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # a setting this gunicorn has (see serve())
                self.cfg.set(key, value)

    def load(self) -> RegistryApp:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        data = open_data(self.config)
        htpasswd = Htpasswd(self.config.htpasswd) if self.config.htpasswd else None
        limits = UploadLimits(max_body=self.config.max_upload_size,
                              body_timeout=self.config.body_timeout,
                              min_rate=self.config.min_upload_rate)  # fmt: skip
        access = Access(data, htpasswd, self.config.admins, self.config.protect_reads)
        upstream = None
        if self.config.upstream is not None:
            from modelpack_registry.upstream import Limits, Upstream

            upstream = Upstream(self.config.upstream, mirror_dir(self.config),
                                self.config.upstream_ttl,
                                Limits(file_size=self.config.max_upload_size))  # fmt: skip
        return RegistryApp(data, limits=limits, legacy=legacy_app(data), access=access,
                           upstream=upstream,
                           storage_redirect=self.config.storage_redirect,
                           redirect_expires=self.config.s3_url_ttl,
                           refresh_interval=self.config.refresh_interval)  # fmt: skip


def serve(config: ServeConfig) -> None:
    """Check the configuration, then serve until SIGTERM/SIGINT.

    :raises ConfigError: see :func:`prepare`.
    :raises StorageError: see :func:`prepare`.
    """
    prepare(config)
    raise_fd_limit(config.max_connections + 4 * config.threads + 64)
    options = {
        "bind": [_bind_address(config.host, config.port)],
        "workers": config.workers,
        "worker_class": "modelpack_registry.web.worker.RegistryWorker",
        "threads": config.threads,
        "worker_connections": config.max_connections,
        "timeout": 120,
        "graceful_timeout": config.graceful_timeout,
        "keepalive": 5,
        "accesslog": "-" if config.access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": "modelpack_registry.web.accesslog.AccessLogger",  # counts sendfile bytes
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "modelpack-registry",
        # gunicorn 26+ opens a control socket at one fixed path per user; two registries
        # on one machine would fight over it, and we do not use it. Older versions have
        # no such setting (nor socket), so load_config skips it there.
        "control_socket_disable": True,
    }
    _Gunicorn(config, options).run()
