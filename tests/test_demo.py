"""Specification of the offline demo's building blocks: its separate DVC project, the served sample
archives and the params pointing at them, the reduced grid, failures and what it prints. The whole
demo (minutes of training) is run by hand, not here; one slow test runs its download stages through DVC."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from seqsweep import download
from seqsweep.params import load_params, validate
from seqsweep.tools import demo

REPO = Path(__file__).resolve().parents[1]
TINY = {"har": (96, 48), "imdb": (300, 200)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root`, .git excluded."""
    return {
        str(p.relative_to(root)): sha256_of(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the pipeline parts of this checkout that the demo copies (so tests may edit them)."""
    root = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", root / "src", ignore=ignore)
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, root / name)
    return root


@pytest.fixture
def archives(tmp_path) -> dict[str, dict]:
    return demo.write_archives(tmp_path / "served", TINY)


# ---- the demo project ----------------------------------------------------------------------------


def test_workspace_is_a_committed_git_and_dvc_project_holding_the_pipeline(checkout, tmp_path):
    target = tmp_path / "demo"
    assert demo.prepare_workspace(checkout, target) is True
    assert (target / ".git").is_dir() and (target / ".dvc" / "config").is_file()
    for name in (
        "dvc.yaml",
        "params.yaml",
        "src/seqsweep/train.py",
        "src/seqsweep/models/har.py",
        ".dvc/plots/seqsweep_strip.json",
    ):
        assert sha256_of(target / name) == sha256_of(checkout / name), name
    assert not list(target.rglob("__pycache__"))
    assert git(target, "status", "--porcelain") == ""  # everything committed
    assert git(target, "log", "--format=%an <%ae>") == "seqsweep demo <demo@seqsweep.invalid>"
    ignored = (target / ".gitignore").read_text().splitlines()
    assert {"/served/", "/mlflow.db", "/mlartifacts/", "/dvc_plots/"} <= set(ignored)
    listed = demo.run(demo.dvc_command() + ["config", "--list", "--project"], target, what="dvc config", capture=True)
    assert {"core.analytics=false", "core.check_update=false", "core.autostage=true"} <= set(listed.split())


def test_preparing_again_changes_nothing_and_keeps_results(checkout, tmp_path):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    head = git(target, "rev-parse", "HEAD")
    (target / "mlflow.db").write_bytes(b"runs")  # what a demo run leaves (git-ignored)
    (target / "mlartifacts" / "har").mkdir(parents=True)
    (target / "mlartifacts" / "har" / "comparison.md").write_text("table")
    before = tree(target)

    assert demo.prepare_workspace(checkout, target) is False
    assert git(target, "rev-parse", "HEAD") == head
    assert tree(target) == before


def test_refresh_follows_edits_additions_and_deletions_in_the_checkout(checkout, tmp_path):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    head = git(target, "rev-parse", "HEAD")
    with open(checkout / "src/seqsweep/train.py", "a") as fh:
        fh.write("# edited\n")
    (checkout / "src/seqsweep/extra.py").write_text("X = 1\n")
    (checkout / "src/seqsweep/stats.py").unlink()

    assert demo.prepare_workspace(checkout, target) is True
    assert (target / "src/seqsweep/train.py").read_text().endswith("# edited\n")
    assert (target / "src/seqsweep/extra.py").is_file()
    assert not (target / "src/seqsweep/stats.py").exists()
    assert git(target, "rev-parse", "HEAD~1") == head
    assert git(target, "status", "--porcelain") == ""


def test_fresh_starts_over(checkout, tmp_path):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    (target / "mlflow.db").write_bytes(b"old runs")
    (target / "notes.txt").write_text("an experiment of the old demo")
    git(target, "add", "notes.txt")
    git(target, "commit", "-qm", "old work")
    old_work = git(target, "rev-parse", "HEAD")

    demo.prepare_workspace(checkout, target, fresh=True)
    assert not (target / "mlflow.db").exists() and not (target / "notes.txt").exists()
    assert old_work not in git(target, "rev-list", "--all")  # a new history
    assert (target / "dvc.yaml").is_file()


@pytest.mark.parametrize("fresh", [False, True])
def test_a_folder_that_is_not_a_demo_project_is_neither_written_into_nor_deleted(checkout, tmp_path, fresh):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(demo.DemoError, match=r"precious exists and is not a seqsweep demo project"):
        demo.prepare_workspace(checkout, target, fresh=fresh)
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


def test_the_users_checkout_is_untouched(checkout, tmp_path, archives):
    before = tree(checkout)
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    demo.write_demo_params(checkout, target, archives, {ds: a["path"].as_uri() for ds, a in archives.items()})
    assert tree(checkout) == before


def test_the_demo_folder_may_not_hold_the_checkout(checkout):
    with pytest.raises(demo.DemoError, match="holds the checkout"):
        demo.prepare_workspace(checkout, checkout.parent)


# ---- archives, server, params --------------------------------------------------------------------


def test_archives_are_reused_when_unchanged_and_regenerated_when_tampered(tmp_path):
    folder = tmp_path / "served"
    first = demo.write_archives(folder, TINY)
    stamp = {ds: a["path"].stat().st_mtime_ns for ds, a in first.items()}
    again = demo.write_archives(folder, TINY)
    assert {ds: a["path"].stat().st_mtime_ns for ds, a in again.items()} == stamp

    data = bytearray(first["imdb"]["path"].read_bytes())
    data[100] ^= 0xFF
    first["imdb"]["path"].write_bytes(bytes(data))
    healed = demo.write_archives(folder, TINY)
    assert sha256_of(healed["imdb"]["path"]) == healed["imdb"]["sha256"] == first["imdb"]["sha256"]


def test_params_name_the_servers_urls_and_the_archives_sha256_and_the_real_download_accepts_them(
    checkout, tmp_path, archives
):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    with demo.ArchiveServer(tmp_path / "served") as server:
        urls = {ds: server.url(a["path"].name) for ds, a in archives.items()}
        demo.write_demo_params(checkout, target, archives, urls)
        params = load_params(target / "params.yaml")
        for ds, archive in archives.items():
            url = params["data"][ds]["url"]
            assert url.startswith(f"http://127.0.0.1:{server.port}/")
            assert params["data"][ds]["sha256"] == sha256_of(archive["path"])
            got = download.download(url, tmp_path / "fetched" / ds, params["data"][ds]["sha256"], retries=0)
            assert sha256_of(got) == sha256_of(archive["path"])
    assert "SYNTHETIC" in (target / "params.yaml").read_text().splitlines()[0]


def test_file_urls_point_at_the_archives(checkout, tmp_path, archives):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    demo.write_demo_params(checkout, target, archives, {ds: a["path"].resolve().as_uri() for ds, a in archives.items()})
    params = load_params(target / "params.yaml")
    for ds, archive in archives.items():
        assert params["data"][ds]["url"] == archive["path"].resolve().as_uri()
        got = download.download(params["data"][ds]["url"], tmp_path / "fetched" / ds, params["data"][ds]["sha256"])
        assert sha256_of(got) == archive["sha256"]


def test_the_server_keeps_the_previous_port_when_it_is_free_and_otherwise_takes_another(checkout, tmp_path, archives):
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    with demo.ArchiveServer(tmp_path / "served") as first:
        demo.write_demo_params(
            checkout, target, archives, {ds: first.url(a["path"].name) for ds, a in archives.items()}
        )
        port = first.port
    assert demo.previous_port(target) == port
    with demo.ArchiveServer(tmp_path / "served", port) as again:
        assert again.port == port  # same URLs: `dvc repro` keeps the download stages cached
        with demo.ArchiveServer(tmp_path / "served", port) as other:
            assert other.port not in (0, port)
            with urllib.request.urlopen(other.url("har.zip"), timeout=10) as resp:
                assert hashlib.sha256(resp.read()).hexdigest() == archives["har"]["sha256"]


def test_reduced_grid_is_valid_trains_every_architecture_and_stays_small():
    full = load_params(REPO / "params.yaml")
    archives = {ds: {"sha256": "0" * 64} for ds in ("har", "imdb")}
    urls = {ds: f"http://127.0.0.1:8000/{ds}" for ds in ("har", "imdb")}
    params = validate(demo.demo_params(yaml.safe_load((REPO / "params.yaml").read_text()), archives, urls))
    assert params["archs"] == full["archs"]  # every architecture the study has
    assert params["mlflow"]["tracking_uri"] == "sqlite:///mlflow.db"  # demo/mlflow.db
    assert len(params["model"]["units"]) >= 2  # the units plot needs two points
    assert params["train"]["repeats"] >= 3  # mean, std and a Welch test per config
    configs = len(params["model"]["units"]) * len(params["train"]["batch_size"]) * len(params["model"]["dropout"])
    fits = configs * params["train"]["repeats"] * sum(len(a) for a in params["archs"].values())
    assert fits <= 60, f"{fits} fits: too many for the 10-minute budget measured in seqsweep.demo"
    assert params["train"]["epochs"] is not None and params["train"]["epochs"] <= 5
    assert params["data"]["imdb"]["maxlen"] <= full["data"]["imdb"]["maxlen"]


# ---- running, failing, printing ------------------------------------------------------------------


def test_a_failing_step_names_itself_and_its_exit_status(tmp_path):
    with pytest.raises(demo.DemoError, match=r"dvc repro failed \(exit status 3\)"):
        demo.run([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, what="dvc repro")
    with pytest.raises(demo.DemoError, match=r"cannot run 'no-such-tool-xyz'"):
        demo.run(["no-such-tool-xyz"], tmp_path, what="tool")


def test_stage_environment_runs_the_copied_code_and_ignores_the_users_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://users-server:5000")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = demo.stage_env(tmp_path)
    assert "MLFLOW_TRACKING_URI" not in env
    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "src"), "/elsewhere"]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_results_are_labelled_synthetic_and_say_where_table_plots_and_mlflow_are(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "comparison.md").write_text("| rank | arch |\n| 1 | lstm |\n")
    html = tmp_path / "dvc_plots" / "index.html"
    text = demo.results_text(tmp_path, html)
    assert "| 1 | lstm |" in text
    own = [line for line in text.splitlines() if line and not line.startswith(("|", "="))]
    assert own and all(line.startswith("[SYNTHETIC demo]") for line in own)
    assert "NOT UCI HAR" in text
    assert str(html) in text
    assert f"ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in text


def test_results_link_straight_to_each_experiments_runs_table_in_the_model_training_view(tmp_path):
    from seqsweep import tracking

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "comparison.md").write_text("| rank | arch |\n")
    har = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path).experiment_id("har")
    text = demo.results_text(tmp_path, None)
    query = "viewStateShareKey=seqsweep&workflowType=machine_learning"
    assert f"http://127.0.0.1:5000/#/experiments/{har}/runs?{query} (har)" in text
    assert "GenAI" not in text  # the link opens the runs table itself: nothing to switch


def test_results_without_a_comparison_table_name_the_report_stage(tmp_path):
    with pytest.raises(demo.DemoError, match="comparison.md is missing .* report stage"):
        demo.results_text(tmp_path, None)


def test_main_exits_non_zero_with_a_clear_message_when_repro_fails(checkout, tmp_path, monkeypatch, capsys):
    (checkout / "dvc.yaml").write_text('stages:\n  boom:\n    cmd: python -c "raise SystemExit(7)"\n')
    monkeypatch.setattr(demo, "source_root", lambda: checkout)
    monkeypatch.setattr(demo, "SAMPLE_SIZES", TINY)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--dir", str(tmp_path / "demo")])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert "error: `dvc repro` in the demo project failed (exit status" in err
    assert all(line.startswith("[SYNTHETIC demo]") for line in out.splitlines())
    assert tree(checkout)["dvc.yaml"]  # the checkout is still there, untouched by the failure


@pytest.mark.slow
def test_demo_project_downloads_through_dvc_from_the_local_server(checkout, tmp_path, archives):
    """The demo's project is a working DVC project: its download stages fetch the served archives."""
    target = tmp_path / "demo"
    demo.prepare_workspace(checkout, target)
    with demo.ArchiveServer(tmp_path / "served") as server:
        demo.write_demo_params(
            checkout, target, archives, {ds: server.url(a["path"].name) for ds, a in archives.items()}
        )
        demo.commit_all(target, "params")
        demo.run(
            demo.dvc_command() + ["repro", "download@har", "download@imdb"],
            target,
            what="dvc repro",
            env=demo.stage_env(target),
            capture=True,
        )
        assert sorted(p for p in server_paths(server)) == ["/har.zip", "/imdb.npz"]
    for archive in archives.values():
        assert sha256_of(target / "data/raw" / archive["path"].name) == archive["sha256"]
    assert "download@har" in (target / "dvc.lock").read_text()


def server_paths(server: demo.ArchiveServer) -> list[str]:
    return list(server.requests)
