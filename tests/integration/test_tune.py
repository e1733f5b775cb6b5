"""`micropatch tune`: an Optuna study over params.yaml's search space, run by the project's own training code.

- SQLite (the default storage): a small study in a DVC repository; its trials are DVC experiments, and
  --write-best puts the best values into params.yaml with its comments.
- PostgreSQL (a real server on loopback, started here from a temporary data folder): two workers share one
  study after a third was killed in the middle of a trial. Every trial is recorded once, pruned trials are marked
  pruned, and the killed worker's trial is failed by the heartbeat check and retried, so it blocks nothing.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.workspace import REPO

from micropatch.core.fileio import write_png
from micropatch.data.patches import build_patch_set, write_patch_set

EPOCHS = 3
SPACE = {"train.lr": {"low": 1.0e-4, "high": 3.0e-2, "log": True}, "train.optimizer": ["adamw", "sgd"],
         "train.attention": ["scse", None], "patchify.background_keep": [0.1, 0.5]}


def workspace(root: Path, trials: int) -> Path:
    """A project folder with params.yaml, preprocessed images, a manifest and the train / val patch sets (tiny)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["compute"] = {"mode": "reproducible", "threads": 1}
    params["patchify"] |= {"size": 64, "stride": 32}
    params["tune"] |= {"trials": trials, "objective": "dice", "space": SPACE,
                       "pruner": {"type": "median", "startup_trials": 1, "warmup_epochs": 0},
                       "train": {"epochs": EPOCHS, "max_steps_per_epoch": 2, "batch_size": 4,
                                 "early_stopping_patience": EPOCHS}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text("# the search space is tune.space\n" + yaml.safe_dump(params, sort_keys=False))
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(["train"] * 4 + ["val"] * 2):
        image = rng.integers(90, 170, (160, 160)).astype(np.uint8)
        lesion = np.zeros((160, 160), np.uint8)
        for y, x in rng.integers(8, 150, (6, 2)):
            lesion[y - 3:y + 3, x - 3:x + 3] = 255
        image[lesion > 0] = 30
        folder = root / "data" / "preprocessed" / "d"
        write_png(folder / f"i{i}.png", image)
        write_png(folder / f"i{i}_fov.png", np.full((160, 160), 255, np.uint8))
        write_png(folder / f"i{i}_MA.png", lesion)
        rows.append({"dataset": "d", "image_id": f"i{i}", "split": split, "sha256": f"{i:064x}", "height": 160,
                     "width": 160, "lesion_bearing": 1})
    header = list(rows[0])
    manifest = root / "data" / "splits" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(",".join(header) + "\n" + "".join(",".join(str(r[k]) for k in header) + "\n" for r in rows))
    for split in ("train", "val"):  # as the patchify stage writes them
        images, masks, index, _ = build_patch_set([r for r in rows if r["split"] == split], root / "data/preprocessed",
                                                  ["MA"], 64, 32, 0.1, 0)
        write_patch_set(root / "data" / "patches" / split, images, masks, index,
                        {"split": split, "background_keep": 0.1, "patches": len(index)})
    return root


def tune(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "micropatch.cli", "tune", *args], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def trials_run(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"tune: trial (\d+) (?:complete|pruned)", log)]


@pytest.mark.slow
def test_sqlite_study_logs_trials_as_dvc_experiments_and_writes_the_best_values_back(tmp_path):
    root = workspace(tmp_path / "project", trials=2)
    # as the project's
    (root / ".gitignore").write_text("/data/*\n!/data/tune/\n/data/tune/*.db\n/data/tune/patches/\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                git + ["commit", "-qm", "project"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    out = finish(tune(root, "--write-best"))

    summary = json.loads((root / "data" / "tune" / "micropatch" / "best.json").read_text())
    assert summary["trials"]["complete"] + summary["trials"]["pruned"] == 2, summary
    assert (root / "data" / "tune" / "optuna.db").is_file()  # the default storage: params tune.storage
    best = summary["best_params"]
    params_text = (root / "params.yaml").read_text()
    assert params_text.startswith("# the search space is tune.space")  # comments kept
    params = yaml.safe_load(params_text)
    assert params["train"]["lr"] == pytest.approx(best["train.lr"])
    assert params["train"]["optimizer"] == best["train.optimizer"]
    assert params["patchify"]["background_keep"] == best["patchify.background_keep"]
    before = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert params["train"]["max_steps_per_epoch"] == before["max_steps_per_epoch"]  # tune.train's short runs:
    assert params["train"]["batch_size"] == before["batch_size"]                    # not written back

    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root, check=True,
                           capture_output=True, text=True).stdout
    names = set(re.findall(r'"name": "(micropatch-\d{4})"', shown))
    assert names == {f"micropatch-{n:04d}" for n in trials_run(out)} and len(names) == 2, shown[:2000]
    header = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--csv"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.splitlines()[0].split(",")
    metrics = {column.rpartition(":")[2] for column in header if "trials/" in column}  # <trial>/metrics.json:key
    assert {"val.dice", "val.aupr_11", "train.loss"} <= metrics, header  # each trial's last-epoch scores
    # a second call finds the study's budget spent and runs nothing
    again = finish(tune(root))
    assert trials_run(again) == [] and "nothing to run" in again


def postgres_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1, from a fresh data folder, stopped afterwards (as root: run as postgres)."""
    bin_dir = postgres_binaries()
    if bin_dir is None:
        if os.environ.get("MICROPATCH_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL's initdb / pg_ctl are not installed (Debian: apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (.ci/run requires it)")
    # outside pytest's tmp folders, which are private to this user: the server may run as another one
    data = Path(tempfile.mkdtemp(prefix="micropatch-pgdata-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: the server runs as Debian's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", "micropatch", "--auth=trust",
                              "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log"), "-o",
                              f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://micropatch@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_two_postgres_workers_share_a_study_after_a_killed_worker(tmp_path, postgres):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    root = workspace(tmp_path / "project", trials=6)
    common = ["--storage", postgres, "--study", "shared", "--heartbeat", "1", "--grace", "3", "--no-dvc-exp"]

    killed = tune(root, *common, "--seed", "0")  # killed in the middle of its first trial
    deadline = time.time() + 300
    running = []
    while not running:
        assert killed.poll() is None and time.time() < deadline, killed.communicate()[0][-3000:]
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="shared", storage=postgres)
            # a trial that has drawn its parameters: it is training when killed
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.params]
        except KeyError:  # the study is not created yet
            pass
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stale = running[0].number
    time.sleep(4)  # past the grace period: the next worker to start a trial fails the stale one

    workers = [tune(root, *common, "--seed", str(seed)) for seed in (1, 2)]
    logs = [finish(w) for w in workers]

    study = optuna.load_study(study_name="shared", storage=postgres)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert len(by_number) == len(trials)
    assert by_number[stale].state == TrialState.FAIL  # failed by the heartbeat check, not left running
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == stale]
    assert len(retries) == 1 and retries[0].params == by_number[stale].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7  # the budget; two workers may each start the last trial
    # recorded once: each finished trial was run by exactly one of the two workers
    run_by = [set(trials_run(log)) for log in logs]
    assert not run_by[0] & run_by[1], run_by
    assert run_by[0] | run_by[1] == {t.number for t in finished}
    assert run_by[0] and run_by[1], "both workers must have run trials of the shared study"
    # pruned trials are marked pruned: they stopped reporting before the last epoch; complete ones did not
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in trials]
    assert all(max(t.intermediate_values) < EPOCHS for t in pruned)
    assert all(len(t.intermediate_values) == EPOCHS for t in trials if t.state == TrialState.COMPLETE)


def test_search_space_errors_name_the_key_and_the_fix(tmp_path):
    import optuna

    from micropatch.core.fileio import InputError
    from micropatch.experiments.tuning import open_storage, suggest, write_best

    trial = optuna.create_study().ask()
    values = suggest(trial, {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                             "train.epochs": {"low": 1, "high": 3},
                             "train.attention": ["scse", None]})
    assert 1e-4 <= values["train.lr"] <= 1e-2 and values["train.epochs"] in (1, 2, 3)
    assert isinstance(values["train.epochs"], int) and values["train.attention"] in ("scse", None)
    with pytest.raises(InputError, match="'lr'.*section.name"):
        suggest(trial, {"lr": [1e-3]})
    with pytest.raises(InputError, match=r"tune.space.train.lr: give a list of choices or \{low, high"):
        suggest(trial, {"train.lr": {"low": 1e-4}})
    with pytest.raises(InputError, match="tune storage 'nosuch://db'.*sqlite:///"):
        open_storage("nosuch://db", 60, 180, 1)
    with pytest.raises(InputError, match="tune storage 'postgresql.*127.0.0.1:1/"):  # nothing listens there
        open_storage("postgresql+psycopg2://micropatch@127.0.0.1:1/postgres", 60, 180, 1)
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0.001  # the step size\n")
    with pytest.raises(InputError, match="train.lrr does not exist"):
        write_best(params, {"train.lrr": 0.1})
    assert params.read_text() == "train:\n  lr: 0.001  # the step size\n"  # nothing half-written
    write_best(params, {"train.lr": 0.01})
    assert params.read_text() == "train:\n  lr: 0.01   # the step size\n"  # the comment keeps its column

    # the project's params.yaml: exactly the searched values change, every other line is the same bytes
    original = (REPO / "params.yaml").read_text()
    params.write_text(original)
    best = {"train.lr": 0.0008019358005221843, "train.encoder": "se_resnet50", "train.attention": None,
            "train.optimizer": "sgd", "patchify.background_keep": 0.05}
    write_best(params, best)
    changed = [(a, b) for a, b in zip(original.splitlines(), params.read_text().splitlines()) if a != b]
    assert len(changed) == len(best) and len(params.read_text().splitlines()) == len(original.splitlines())
    assert ("  lr: 0.001", "  lr: 0.0008019358005221843") in [(a.split("#")[0].rstrip(), b.split("#")[0].rstrip())
                                                              for a, b in changed]
    loaded = yaml.safe_load(params.read_text())
    assert loaded["train"]["attention"] is None and loaded["patchify"]["background_keep"] == 0.05
    assert [b.index("#") for a, b in changed if "#" in a] == [a.index("#") for a, b in changed if "#" in a]
