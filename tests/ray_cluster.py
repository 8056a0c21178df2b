"""A real local multi-node Ray cluster for tests: started with `ray start`, stopped by process id.

    cluster = start_cluster(tmp_path, nodes=2, cpus_per_node=1)
    try:
        subprocess.run([...], env={**os.environ, **cluster.driver_env})  # RAY_ADDRESS + token auth
    finally:
        cluster.stop()

Design:
* Every node is one `ray start ... --block` process started with
  start_new_session=True, so it leads its own session + process group.
  gcs_server, raylet, monitor, dashboard (minimal), log_monitor and the agents stay
  in that process group; Ray workers (ray::IDLE / ray::<task>) get their OWN process
  group (setpgid) but stay in the session -> processes are found by session id.
* stop(): SIGTERM to the `ray start` leaders (worker nodes first, head last) with
  RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 in the nodes' env (else SIGTERM first
  "drains" the node for up to 30 s while tasks run), bounded wait, then SIGKILL to
  every process left in the sessions (killpg alone would miss workers), then SIGKILL
  of any other pid recorded while the cluster was running.
* Bounded waits everywhere; failures raise RayClusterError including the log tails.
* No global state: the Ray temp dir (sessions, logs, sockets) is a short
  directory per cluster; nothing is written to /tmp/ray.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tracking_server import free_port

# Unix socket paths are limited to 107 bytes; Ray puts sockets in
# <temp_dir>/session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store (~60 chars).
_MAX_TEMP_DIR_LEN = 40


class RayClusterError(RuntimeError):
    pass


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def _pids_in_sessions(sids) -> list[int]:
    """All live (non-zombie) pids whose session id OR process group id is in sids.

    Each `ray start` leader is started with start_new_session=True, so its pid is both
    its session id and its process group id.  gcs_server/raylet/agents stay in the
    leader's process group, but Ray *workers* (ray::IDLE, ray::task) call setpgid()
    and lead their own process group -- they keep the session id, so match on that.
    """
    sids = set(sids)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            # fields after the ')' : state ppid pgrp session ...
            rest = stat.rsplit(")", 1)[1].split()
            if rest[0] == "Z":  # zombie: already dead, waiting for reaping
                continue
            if int(rest[3]) in sids or int(rest[2]) in sids:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _ray_bin() -> str:
    cand = Path(sys.executable).with_name("ray")
    if cand.exists():
        return str(cand)
    found = shutil.which("ray")
    if not found:
        raise RayClusterError("`ray` executable not found next to sys.executable or on PATH")
    return found


@dataclass
class RayCluster:
    address: str  # "127.0.0.1:<gcs port>", usable as RAY_ADDRESS / ray.init(address=)
    port: int
    temp_dir: Path  # Ray --temp-dir (session dirs, logs)
    workdir: Path  # where the ray start stdout/stderr logs are written
    procs: list[subprocess.Popen] = field(default_factory=list)  # [head, node1, ...]
    log_files: list[Path] = field(default_factory=list)
    auth_env: dict[str, str] = field(default_factory=dict)  # RAY_AUTH_* vars drivers need
    _owns_temp_dir: bool = False
    _seen_pids: set = field(default_factory=set)
    _stopped: bool = False

    @property
    def pids(self) -> list[int]:
        """pids of the `ray start --block` leaders (== their process group ids)."""
        return [p.pid for p in self.procs]

    @property
    def log_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    @property
    def driver_env(self) -> dict[str, str]:
        """Only the variables a driver needs (e.g. for monkeypatch.setenv)."""
        return {"RAY_ADDRESS": self.address, "RAY_USAGE_STATS_ENABLED": "0", **self.auth_env}

    def all_pids(self) -> list[int]:
        """Every live process of the cluster (members of the leaders' sessions)."""
        pids = _pids_in_sessions(self.pids)
        self._seen_pids.update(pids)
        return pids

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def logs_tail(self, n: int = 40) -> str:
        parts = []
        for lf in self.log_files:
            parts.append(f"==== {lf} ====\n{_tail(lf, n)}")
        for name in ("gcs_server.err", "raylet.err", "raylet.out"):
            p = self.log_dir / name
            if p.exists():
                parts.append(f"==== {p} ====\n{_tail(p, n)}")
        return "\n".join(parts)

    def stop(self, timeout: float = 20.0) -> list[int]:
        """Stop all nodes. Returns pids that had to be SIGKILLed (empty = clean SIGTERM exit).

        Idempotent. Safe to call after a partial start.
        """
        if self._stopped:
            return []
        self._stopped = True
        # If this very process is still a driver of this cluster, disconnect first
        # (otherwise its core worker logs reconnect errors / may block at exit).
        ray_mod = sys.modules.get("ray")
        if ray_mod is not None:
            try:
                if ray_mod.is_initialized() and ray_mod.get_runtime_context().gcs_address.rsplit(":", 1)[-1] == str(
                    self.port
                ):
                    ray_mod.shutdown()
            except Exception:
                pass
        try:
            self.all_pids()  # remember descendants for the final sweep
        except Exception:
            pass
        killed: list[int] = []
        # worker nodes first, head last (a node whose GCS vanishes would otherwise
        # log reconnect errors and wait for gcs_rpc_server_reconnect_timeout_s).
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if p.poll() is not None and not _pids_in_sessions([p.pid]):
                    break
                time.sleep(0.1)
        # fallback: SIGKILL whatever is left in the sessions (groups + worker groups)
        for sid in self.pids:
            left = _pids_in_sessions([sid])
            if left:
                killed.extend(left)
                try:
                    os.killpg(sid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        # anything we saw earlier that escaped its group (should not happen with Ray 2.60)
        for pid in sorted(self._seen_pids):
            if pid in self.pids:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            if _is_ray_process(pid, self.temp_dir):
                killed.append(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return killed


def _is_ray_process(pid: int, temp_dir: Path) -> bool:
    """Guard for the final sweep: only kill pids that still look like ours (pid reuse)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return cmd.startswith("ray::") or str(temp_dir) in cmd


_READY_SCRIPT = r"""
import json, sys, time, ray
want, timeout = int(sys.argv[1]), float(sys.argv[2])
ray.init(address=sys.argv[3], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    cpus = ray.cluster_resources().get("CPU", 0)
    if len(alive) >= want:
        print(json.dumps({"nodes": len(alive), "cpus": cpus}))
        sys.exit(0)
    if time.monotonic() > deadline:
        print(json.dumps({"nodes": len(alive), "cpus": cpus, "timeout": True}))
        sys.exit(3)
    time.sleep(0.2)
"""


def _wait_port(port: int, procs, timeout: float, what: str, cluster: RayCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RayClusterError(
                    f"{what}: `ray start` pid {p.pid} exited with {p.returncode} before "
                    f"the GCS port {port} opened\n{cluster.logs_tail()}"
                )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RayClusterError(f"{what}: GCS port {port} not open after {timeout}s\n{cluster.logs_tail()}")


def start_cluster(
    workdir,
    *,
    nodes: int = 2,
    cpus_per_node: int = 1,
    timeout: float = 90.0,
    object_store_memory: int | None = 200 * 1024 * 1024,
) -> RayCluster:
    """Start a head + (nodes-1) worker nodes on this host and wait until all are registered.

    Node processes inherit os.environ; Ray workers inherit the env of their node's raylet, NOT of
    the driver -> pass per-job vars via runtime_env={"env_vars": {...}}.

    Token authentication with a fresh random token in <workdir>/auth_token (0600), via
    RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH (never ~/.ray/auth_token); drivers use
    cluster.driver_env. The mode is set explicitly: with RAY_AUTH_MODE unset, `ray start --head`
    silently enables token auth whenever ~/.ray/auth_token exists (a plain local `ray.init()`
    creates that file), while a driver connecting via RAY_ADDRESS does not -> "InvalidAuthToken".
    """
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    temp_dir = workdir / "ray"
    owns = False
    if len(str(temp_dir)) > _MAX_TEMP_DIR_LEN:
        temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        owns = True
        (workdir / "ray_temp_dir.txt").write_text(str(temp_dir) + "\n")
    temp_dir.mkdir(parents=True, exist_ok=True)

    ray = _ray_bin()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # `ray start --head` must not try to join something else
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")  # SIGTERM = immediate stop
    # the nodes' own home, as on other machines: what tasks keep there (seqsweep's JAX compilation
    # cache, ${HOME}/.cache/seqsweep/jax) stays in the cluster's folder, not in the user's home
    env["HOME"] = str(workdir / "home")
    (workdir / "home").mkdir(exist_ok=True)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    tok = workdir / "auth_token"
    fd = os.open(tok, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tok)}
    env.update(auth_env)

    port = free_port()
    address = f"127.0.0.1:{port}"
    cluster = RayCluster(
        address=address, port=port, temp_dir=temp_dir, workdir=workdir, auth_env=auth_env, _owns_temp_dir=owns
    )
    common = [
        "--num-cpus",
        str(cpus_per_node),
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        "127.0.0.1",
        "--temp-dir",
        str(temp_dir),
        "--log-style",
        "record",
        "--log-color",
        "false",
    ]
    if object_store_memory:
        common += ["--object-store-memory", str(int(object_store_memory))]

    def launch(args: list[str], name: str) -> None:
        log = workdir / f"{name}.log"
        cluster.log_files.append(log)
        with open(log, "wb") as fh:
            p = subprocess.Popen(
                [ray, "start", *args, *common],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(workdir),
                start_new_session=True,
            )
        cluster.procs.append(p)

    t0 = time.monotonic()
    try:
        launch(["--head", "--port", str(port), "--include-dashboard=false"], "head")
        _wait_port(port, cluster.procs, timeout, "head", cluster)
        for i in range(1, nodes):
            launch(["--address", address], f"node{i}")
        remaining = max(5.0, timeout - (time.monotonic() - t0))
        r = subprocess.run(
            [sys.executable, "-c", _READY_SCRIPT, str(nodes), str(remaining), address],
            env=dict(env, RAY_ADDRESS=address),
            capture_output=True,
            text=True,
            timeout=remaining + 30,
        )
        if r.returncode != 0:
            raise RayClusterError(
                f"cluster not ready ({nodes} nodes) within {timeout}s: rc={r.returncode} "
                f"stdout={r.stdout.strip()!r}\nstderr tail:\n{r.stderr[-3000:]}\n{cluster.logs_tail()}"
            )
        if not cluster.alive():
            raise RayClusterError(f"a `ray start` process died during start-up\n{cluster.logs_tail()}")
        cluster.all_pids()
        return cluster
    except BaseException:
        cluster.stop()
        raise
