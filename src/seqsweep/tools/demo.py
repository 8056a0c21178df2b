"""Offline demo: the whole pipeline (download -> extract -> prepare -> train -> report) on SYNTHETIC
sample archives served from 127.0.0.1, with a reduced grid, in a separate DVC project at `demo/`, so
the user's own workspace, data/ and mlflow.db are never touched.

    python -m seqsweep.tools.demo            # build or refresh demo/, serve the archives, `dvc repro`, print results
    python -m seqsweep.tools.demo --fresh    # delete demo/ first and start over
    python -m seqsweep.tools.demo --file-urls  # read the archives from file:// URLs instead of the local server

The demo project is a copy of dvc.yaml, src/ and params.yaml (with data.*.url pointing at the local
server, data.*.sha256 set to the sample archives' digests and the grid reduced, see DEMO_GRID) in its
own git + DVC repository; the stages run the copied src/ (PYTHONPATH), so DVC's code dependencies are
the code that runs. A rerun refreshes the copies and lets DVC rerun only what changed. MLflow logs to
demo/mlflow.db, artifacts to demo/mlartifacts/.

Measured end to end (`/usr/bin/time python -m seqsweep.tools.demo --fresh`: sample archives, download over
HTTP, extract, prepare, 9 training stages of 6 fits each, report, `dvc plots show`) on the 2-core
development machine while other jobs shared it (the demo got 1.0-1.2 cores): 408 s and 371 s, and
410 s with --file-urls; a rerun retraining everything but extract 365 s; a rerun with nothing changed
4 s. Budget: under 10 minutes.
Everything the demo prints is labelled SYNTHETIC: the numbers say nothing about UCI HAR or IMDB.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import yaml

from seqsweep import atomic, paths
from seqsweep.checksum import sha256_file
from seqsweep.errors import SeqsweepError, exit_on_error
from seqsweep.params import validate
from seqsweep.tools import sample_data

LABEL = "[SYNTHETIC demo]"
DEMO_DIRNAME = "demo"
SERVED_DIRNAME = "served"  # the sample archives, inside demo/ (git-ignored there)
MANIFEST = "manifest.json"  # what was generated, so a rerun does not regenerate identical archives
MARKER = ".seqsweep-demo"  # marks a folder as a demo project: only such a folder is ever deleted
SAMPLE_SEED = 0
# Sample sizes (train, test): HAR windows, IMDB reviews. Small enough for the 10-minute budget,
# large enough that architectures and settings separate.
SAMPLE_SIZES = {"har": (1500, 600), "imdb": (4000, 1000)}
# The reduced grid and repeats: 2 units x 1 batch size x 1 dropout x 3 repeats = 6 fits of 3 epochs
# per architecture, 54 over the 9 training stages; IMDB reviews cut to their last 80 word ids.
DEMO_GRID = {
    "model": {"units": [10, 32], "dropout": [0.5]},
    "train": {"batch_size": [64], "repeats": 3, "epochs": 3},
    "data": {"imdb": {"maxlen": 80}},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db"},
}
COPIED = ("dvc.yaml", "src", ".dvc/plots")  # .dvc/plots: the custom plot templates dvc.yaml names
DEMO_GITIGNORE = """\
# seqsweep demo: local state that is not part of the demo project
/served/
/mlflow.db
/mlflow.db.lock
/mlartifacts/
/mlruns/
/dvc_plots/
__pycache__/
*.egg-info/
"""
GIT_IDENTITY = {"user.name": "seqsweep demo", "user.email": "demo@seqsweep.invalid", "commit.gpgsign": "false"}


class DemoError(SeqsweepError):
    """A step of the demo failed; the message names the step and what to do."""


def say(message: str = "") -> None:
    """Print one line of the demo's own output, labelled SYNTHETIC."""
    print(f"{LABEL} {message}" if message else LABEL, flush=True)


# ---- the source checkout and the demo project ------------------------------------------------------------


def source_root() -> Path:
    """The checkout this package runs from (`pip install -e .`): it holds dvc.yaml, params.yaml and src/."""
    root = Path(__file__).resolve().parents[3]
    missing = [name for name in ("dvc.yaml", "params.yaml", "src/seqsweep") if not (root / name).exists()]
    if missing:
        raise DemoError(
            f"{root}: not a seqsweep source checkout (no {', '.join(missing)}); the demo copies the "
            f"pipeline from the checkout, so install it with `pip install -e .` from a clone"
        )
    return root


def run(cmd: list[str], cwd: Path, *, what: str, env: dict | None = None, capture: bool = False) -> str:
    """Run `cmd` in `cwd` (output streamed unless `capture`); a failure raises DemoError naming `what`."""
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
        )
    except OSError as exc:
        raise DemoError(f"{what}: cannot run {cmd[0]!r}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        tail = f"\n{done.stdout.strip()}" if capture and done.stdout else ""
        raise DemoError(f"{what} failed (exit status {done.returncode}): `{' '.join(cmd)}` in {cwd}{tail}")
    return done.stdout if capture else ""


def dvc_command() -> list[str]:
    """DVC from the same environment as this Python (no reliance on an activated venv)."""
    return [sys.executable, "-m", "dvc"]


def _git(demo: Path, *args: str, capture: bool = True) -> str:
    return run(["git", *args], demo, what=f"git {args[0]} in {demo}", capture=capture)


def _sync_copies(source: Path, demo: Path) -> None:
    """Make demo/{dvc.yaml,src,.dvc/plots} equal to the checkout's (deleted source files disappear too)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in COPIED:
        src, dst = source / name, demo / name
        if not src.exists():
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            continue
        if src.is_dir():
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)


def commit_all(demo: Path, message: str) -> bool:
    """Commit everything in the demo repository; False when there was nothing to commit."""
    _git(demo, "add", "-A")
    if not _git(demo, "status", "--porcelain").strip():
        return False
    _git(demo, "commit", "-q", "--no-verify", "-m", message)
    return True


def prepare_workspace(source: Path, demo: Path, *, fresh: bool = False) -> bool:
    """Create (or refresh) the demo DVC project at `demo` from the checkout at `source`.

    Idempotent: a second call changes nothing unless the checkout's pipeline changed. `fresh` deletes
    `demo` first. The demo's params.yaml is written separately (write_demo_params). Returns whether a
    commit was made."""
    demo = demo.resolve()
    if demo == source.resolve() or source.resolve().is_relative_to(demo):
        raise DemoError(f"refusing to use {demo} as the demo folder: it holds the checkout {source}")
    if demo.exists() and any(demo.iterdir()) and not (demo / MARKER).is_file():
        raise DemoError(
            f"{demo} exists and is not a seqsweep demo project (no {MARKER} file); "
            f"refusing to {'delete' if fresh else 'write into'} it: choose another --dir"
        )
    if fresh and demo.exists():
        shutil.rmtree(demo)
    demo.mkdir(parents=True, exist_ok=True)
    (demo / MARKER).write_text("A seqsweep demo project, made by `python -m seqsweep.tools.demo`; SYNTHETIC data.\n")
    if not (demo / ".git").exists():
        _git(demo, "init", "-q")
    for key, value in GIT_IDENTITY.items():
        _git(demo, "config", key, value)
    if not (demo / ".dvc").exists():
        run(dvc_command() + ["init", "-q"], demo, what="dvc init", capture=True)
    _configure_dvc(demo)
    _sync_copies(source, demo)
    (demo / ".gitignore").write_text(DEMO_GITIGNORE + _dvc_ignored_lines(demo / ".gitignore"))
    if not (demo / "params.yaml").exists():
        shutil.copy2(source / "params.yaml", demo / "params.yaml")
    return commit_all(demo, "seqsweep demo: pipeline copied from the checkout")


# Offline and quiet (no usage reports, no update checks), and `dvc repro` stages what it writes in git.
DVC_CORE = {"analytics": "false", "check_update": "false", "autostage": "true"}


def _configure_dvc(demo: Path) -> None:
    """Set DVC_CORE in the demo's .dvc/config through DVC's own config class, which `dvc config` uses
    (in this process: three `dvc config` processes took about 1.5 s of a 2-core machine)."""
    from dvc.config import Config, ConfigError

    try:
        with Config(dvc_dir=str(demo / ".dvc")).edit("repo") as conf:
            conf.setdefault("core", {}).update(DVC_CORE)
    except ConfigError as exc:
        raise DemoError(f"{demo / '.dvc/config'}: DVC cannot use it: {exc}") from None


def _dvc_ignored_lines(path: Path) -> str:
    """The lines DVC appended to the demo's .gitignore (its outputs), kept when the header is rewritten."""
    if not path.exists():
        return ""
    ours = set(DEMO_GITIGNORE.splitlines())
    return "".join(line + "\n" for line in path.read_text().splitlines() if line not in ours)


# ---- the sample archives and the server ------------------------------------------------------------------


def write_archives(folder: Path, sizes: dict = SAMPLE_SIZES, seed: int = SAMPLE_SEED) -> dict[str, dict]:
    """Write the SYNTHETIC sample archives into `folder`; returns {dataset: {"path", "sha256"}}.

    Reused as they are when the manifest says they were made with the same sizes, seed and generator
    code and their digests still match; otherwise regenerated."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = sha256_file(Path(sample_data.__file__))
    wanted = {"sizes": {ds: list(n) for ds, n in sizes.items()}, "seed": seed, "generator": generator}
    manifest_path = folder / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    files = {ds: folder / paths.RAW_FILENAMES[ds] for ds in paths.DATASETS}
    if all(manifest.get(k) == v for k, v in wanted.items()) and all(
        p.is_file() and sha256_file(p) == manifest.get("sha256", {}).get(ds) for ds, p in files.items()
    ):
        return {ds: {"path": p, "sha256": manifest["sha256"][ds]} for ds, p in files.items()}
    sample_data.write_har_archive(files["har"], *sizes["har"], layout="current", seed=seed)
    sample_data.write_imdb_npz(files["imdb"], *sizes["imdb"], seed=seed)
    digests = {ds: sha256_file(p) for ds, p in files.items()}
    atomic.write_json(manifest_path, {**wanted, "sha256": digests})
    return {ds: {"path": p, "sha256": digests[ds]} for ds, p in files.items()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # DVC's output is the demo's output; no access log in between
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.requests.append(self.path)
        super().do_GET()


class ArchiveServer:
    """Serve one folder over HTTP on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(self, folder: Path, port: int = 0):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        try:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError:
            if port == 0:
                raise
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.requests = []  # paths requested, in order
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="seqsweep-demo-server", daemon=True
        )
        self._thread.start()

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(name)}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ArchiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def previous_port(demo: Path) -> int:
    """The port the demo's params.yaml already names (reusing it keeps `download` cached), else 0."""
    try:
        url = yaml.safe_load((demo / "params.yaml").read_text())["data"]["har"]["url"]
        parts = urllib.parse.urlsplit(url)
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return 0
    return parts.port or 0 if parts.scheme == "http" and parts.hostname == "127.0.0.1" else 0


# ---- params ----------------------------------------------------------------------------------------------


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def demo_params(base: dict, archives: dict[str, dict], urls: dict[str, str]) -> dict:
    """The checkout's params (its architectures too) with the served archives' URLs and digests and
    the reduced grid (DEMO_GRID); validated like any params.yaml."""
    data = {ds: {"url": urls[ds], "sha256": archives[ds]["sha256"]} for ds in paths.DATASETS}
    params = _merge(_merge(base, {"data": data}), DEMO_GRID)
    validate(params, Path("demo params"))
    return params


def write_demo_params(source: Path, demo: Path, archives: dict[str, dict], urls: dict[str, str]) -> dict:
    """Write demo/params.yaml from the checkout's params.yaml; returns the params written."""
    try:
        base = yaml.safe_load((source / "params.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DemoError(f"{source / 'params.yaml'}: cannot read it: {exc}") from None
    params = demo_params(base, archives, urls)
    header = (
        "# seqsweep DEMO params: SYNTHETIC sample archives served locally, reduced grid.\n"
        "# Written by `python -m seqsweep.tools.demo`; edit the checkout's params.yaml, not this file.\n"
    )
    atomic.write_text(demo / "params.yaml", header + yaml.safe_dump(params, sort_keys=False))
    return params


# ---- running and reporting -------------------------------------------------------------------------------


def stage_env(demo: Path) -> dict:
    """The environment for `dvc repro`: the copied src/ first on PYTHONPATH, this Python's bin on PATH
    (DVC runs `python -m ...`), MLflow pointed only by params (MLFLOW_TRACKING_URI dropped), no
    telemetry or update checks (offline)."""
    env = dict(os.environ)
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join([str(demo / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    )
    return env


def render_plots(demo: Path, env: dict) -> Path:
    """`dvc plots show` into demo/dvc_plots; returns the HTML page."""
    out = demo / "dvc_plots"
    run(dvc_command() + ["plots", "show", "-o", str(out)], demo, what="dvc plots show", env=env, capture=True)
    html = out / "index.html"
    if not html.is_file():
        raise DemoError(f"`dvc plots show` in {demo} wrote no {html}: does dvc.yaml declare plots?")
    return html


def mlflow_command(demo: Path) -> str:
    exe = Path(sys.executable).parent / "mlflow"
    return (
        f"{exe if exe.exists() else 'mlflow'} ui --backend-store-uri sqlite:///{demo / 'mlflow.db'} "
        f"--host 127.0.0.1 --port 5000"
    )


def experiment_ids(demo: Path) -> dict[str, str]:
    """The demo store's experiment ids by name (har, imdb), for direct links; none without a store."""
    import sqlite3

    db = demo / "mlflow.db"
    if not db.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("select name, experiment_id from experiments where name in ('har', 'imdb')").fetchall()
    except sqlite3.Error:
        return {}
    return {name: str(eid) for name, eid in sorted(rows)}


def results_text(demo: Path, plots_html: Path | None) -> str:
    """What the demo prints at the end: the comparison table and where to look next, labelled SYNTHETIC."""
    table_path = demo / "metrics" / "comparison.md"
    if not table_path.is_file():
        raise DemoError(f"{table_path} is missing after `dvc repro`: does dvc.yaml have the report stage?")
    rule = "=" * 100
    lines = [
        rule,
        f"{LABEL} RESULTS ON SYNTHETIC DATA: sample archives made by seqsweep.tools.sample_data, NOT UCI HAR",
        f"{LABEL} or IMDB; reduced grid and repeats. The numbers show the pipeline works, nothing more.",
        rule,
        "",
        table_path.read_text().rstrip(),
        "",
        rule,
        f"{LABEL} comparison table:  {table_path}  (also {demo / 'metrics' / 'comparison.csv'})",
        f"{LABEL} summary metrics:   cd {demo} && dvc metrics show",
    ]
    if plots_html is not None:
        lines.append(f"{LABEL} plots:             {plots_html}  (rendered by `cd {demo} && dvc plots show`)")
    from seqsweep.tracking import runs_link  # (MLflow is imported only when links are shown)

    links = [f"{runs_link(eid)} ({name})" for name, eid in experiment_ids(demo).items()]
    lines += [
        f"{LABEL} MLflow UI:         {mlflow_command(demo)}",
        f"{LABEL}                    then open {', '.join(links) or 'http://127.0.0.1:5000'}",
        f"{LABEL}                    (the runs table; the experiment's description says how to compare; the",
        f"{LABEL}                    `summary` run holds the table and plots).",
        f"{LABEL} run again:         python -m seqsweep.tools.demo  (serves the archives again; DVC reruns only "
        f"what changed)",
        rule,
    ]
    return "\n".join(lines)


def default_demo_dir(source: Path) -> Path:
    return source / DEMO_DIRNAME


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """`python -m seqsweep.tools.demo [--fresh] [--file-urls] [--dir DIR]`: the whole pipeline on SYNTHETIC data."""
    parser = argparse.ArgumentParser(prog="python -m seqsweep.tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="delete the demo folder first and start over")
    parser.add_argument(
        "--file-urls",
        action="store_true",
        help="point data.*.url at file:// URLs of the sample archives instead of a local HTTP "
        "server (switching changes data.*.url, which the prepare stages depend on: "
        "the pipeline then runs again)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help=f"where to create the demo project (default: <checkout>/{DEMO_DIRNAME})"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    source = source_root()
    demo = (args.dir or default_demo_dir(source)).resolve()
    say(f"demo project: {demo} (your workspace {source} is not touched)")
    port = 0 if args.fresh else previous_port(demo)
    prepare_workspace(source, demo, fresh=args.fresh)
    say(f"writing SYNTHETIC sample archives (HAR {SAMPLE_SIZES['har']}, IMDB {SAMPLE_SIZES['imdb']} train/test)")
    archives = write_archives(demo / SERVED_DIRNAME, SAMPLE_SIZES)
    env = stage_env(demo)
    with contextlib.ExitStack() as stack:
        if args.file_urls:
            urls = {ds: a["path"].resolve().as_uri() for ds, a in archives.items()}
        else:
            server = stack.enter_context(ArchiveServer(demo / SERVED_DIRNAME, port))
            urls = {ds: server.url(a["path"].name) for ds, a in archives.items()}
            say(f"serving {demo / SERVED_DIRNAME} on http://127.0.0.1:{server.port}/ for the download stage")
        write_demo_params(source, demo, archives, urls)
        commit_all(demo, "seqsweep demo: params for the served sample archives")
        say("running `dvc repro` in the demo project (output below)")
        try:
            run(dvc_command() + ["repro"], demo, what="`dvc repro` in the demo project", env=env)
        except KeyboardInterrupt:
            raise DemoError("interrupted; run the demo again to resume (finished repeats are reused)") from None
    html = render_plots(demo, env)
    commit_all(demo, "seqsweep demo: results")
    print(results_text(demo, html), flush=True)
    say(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
