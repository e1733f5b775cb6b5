"""Killed runs: training resumes bit-exactly from its last checkpoint; a killed write leaves the old file."""
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from helpers.patchsets import patch_set
from helpers.training_state import saved_epoch
from helpers.workspace import PARAMS
from safetensors.torch import load_file

from micropatch.training.config import TrainConfig
from micropatch.training.trainer import TrainingDiverged, train

CFG = dict(epochs=3, batch_size=8, max_steps_per_epoch=3, early_stopping_patience=10, seed=0)


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    return patch_set(root / "train", 24, 0), patch_set(root / "val", 8, 1)


def run_child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(patches, tmp_path):
    """SIGKILL once epoch 1's state is saved, then SIGKILL the resumed run once its own state (epoch 2) is saved;
    the last resume must end with the uninterrupted run's bytes. (The same through `dvc repro`, killed once:
    test_pipeline_e2e.)"""
    train_dir, val_dir = patches
    reference = tmp_path / "reference.safetensors"
    train(train_dir, val_dir, ["MA"], TrainConfig.from_params(PARAMS, **CFG), reference, tmp_path / "ref_state.pt",
          "fp")

    model, state = tmp_path / "model.safetensors", tmp_path / "state.pt"
    for kill_after_epoch in (1, 2):
        child = run_child(f"""
            import time
            from pathlib import Path
            from micropatch.training.config import TrainConfig
            from micropatch.training.trainer import train
            # after the next checkpoint, hang as a long epoch would, until killed
            train(Path({str(train_dir)!r}), Path({str(val_dir)!r}), ["MA"],
                  TrainConfig.from_params({str(PARAMS)!r}, **{CFG!r}), Path({str(model)!r}),
                  Path({str(state)!r}), "fp", on_epoch=lambda history: time.sleep(600))
        """)
        deadline = time.time() + 300
        while saved_epoch(state) < kill_after_epoch and time.time() < deadline and child.poll() is None:
            time.sleep(0.2)
        assert child.poll() is None, child.communicate()[0]
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert saved_epoch(state) == kill_after_epoch

    summary = train(train_dir, val_dir, ["MA"], TrainConfig.from_params(PARAMS, **CFG), model, state, "fp")
    assert summary["epochs_run"] == 3
    resumed, expected = load_file(model), load_file(reference)
    assert all(torch.equal(resumed[k], expected[k]) for k in expected), "resumed weights differ"


def test_a_state_from_other_params_is_not_resumed(patches, tmp_path):
    train_dir, val_dir = patches
    cfg = TrainConfig.from_params(PARAMS, **(CFG | {"epochs": 2}))
    train(train_dir, val_dir, ["MA"], cfg, tmp_path / "m.safetensors", tmp_path / "s.pt", "params-A")
    trained = []
    train(train_dir, val_dir, ["MA"], cfg, tmp_path / "m.safetensors", tmp_path / "s.pt", "params-B",
          on_epoch=lambda history: trained.append(history[-1]["epoch"]))
    assert trained == [1, 2]  # started over; resuming A's finished state would have trained no epoch at all


def test_a_finished_state_resumes_to_the_same_model_without_training(patches, tmp_path):
    """Killed after the last epoch's state was saved, before the model was written: the rerun writes the best."""
    train_dir, val_dir = patches
    cfg = TrainConfig.from_params(PARAMS, **(CFG | {"epochs": 2}))
    state, first, second = tmp_path / "s.pt", tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(train_dir, val_dir, ["MA"], cfg, first, state, "fp")
    trained = []
    summary = train(train_dir, val_dir, ["MA"], cfg, second, state, "fp",
                    on_epoch=lambda history: trained.append(history[-1]["epoch"]))
    assert trained == [] and summary["epochs_run"] == 2
    assert first.read_bytes() == second.read_bytes()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(patches, tmp_path, monkeypatch):
    train_dir, val_dir = patches
    state = tmp_path / "s.pt"
    cfg = TrainConfig.from_params(PARAMS, **(CFG | {"epochs": 1}))
    train(train_dir, val_dir, ["MA"], cfg, tmp_path / "m.safetensors", state, "fp")
    good = state.read_bytes()
    import micropatch.training.trainer as trainer

    monkeypatch.setattr(trainer, "make_loss", lambda n, c: lambda logits, target: logits.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan in epoch 2.*kept the last good checkpoint"):
        train(train_dir, val_dir, ["MA"], TrainConfig.from_params(PARAMS, **(CFG | {"epochs": 2})),
              tmp_path / "m.safetensors", state, "fp")
    assert state.read_bytes() == good


def test_a_write_killed_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "images.npy"
    np.save(target, np.arange(10))
    child = run_child(f"""
        import numpy as np
        from micropatch.core.fileio import save_npy
        save_npy({str(target)!r}, np.ones((64, 1024, 1024), np.float64))  # 512 MB: long enough to be caught
    """)
    while not list(tmp_path.glob(".images.npy.*")) and child.poll() is None:
        time.sleep(0.01)
    partial = list(tmp_path.glob(".images.npy.*"))  # the temporary file exists: the write is under way
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert partial, f"the child ended before writing (exit {child.returncode}): {child.stdout.read().decode()[-2000:]}"
    assert child.returncode == -signal.SIGKILL  # it died of the kill, mid-write
    assert np.array_equal(np.load(target), np.arange(10))  # the reader sees the old, complete file


def test_a_code_running_resume_state_is_refused(patches, tmp_path):
    import pickle

    from micropatch.core.fileio import InputError

    class Exploit:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    state = tmp_path / "last.pt"
    state.write_bytes(pickle.dumps({"fingerprint": "fp", "model": Exploit()}))
    with pytest.raises(InputError, match="last.pt: refused to resume"):
        train(*patches, ["MA"], TrainConfig.from_params(PARAMS, **CFG), tmp_path / "m.safetensors", state, "fp")
    assert not (tmp_path / "pwned").exists()


def test_swa_epochs_are_kept_through_a_resume_and_init_seed_gives_one_start(patches, tmp_path):
    """train.swa_epochs: the last epochs' weights are written beside the model, also when the run was resumed;
    train.init_seed: runs of different seeds start from the same weights (model soups need one start)."""
    from micropatch.training.network import load_checkpoint
    from micropatch.training.trainer import EPOCHS_DIR

    train_dir, val_dir = patches
    cfg = TrainConfig.from_params(PARAMS, **(CFG | {"swa_epochs": 2}))
    straight = tmp_path / "straight" / "m.safetensors"
    train(train_dir, val_dir, ["MA"], cfg, straight, tmp_path / "s1.pt", "fp")
    kept = sorted(p.name for p in (straight.parent / EPOCHS_DIR).iterdir())
    assert kept == ["epoch_002.safetensors", "epoch_003.safetensors"]

    resumed = tmp_path / "resumed" / "m.safetensors"
    train(train_dir, val_dir, ["MA"], TrainConfig.from_params(PARAMS, **(CFG | {"swa_epochs": 2, "epochs": 2})),
          resumed, tmp_path / "s2.pt", "fp2")
    (resumed.parent / EPOCHS_DIR / "epoch_001.safetensors").unlink()  # as DVC deletes outputs before a rerun
    train(train_dir, val_dir, ["MA"], cfg, resumed, tmp_path / "s2.pt", "fp2")
    for name in kept:
        a, b = load_file(straight.parent / EPOCHS_DIR / name), load_file(resumed.parent / EPOCHS_DIR / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert load_checkpoint(straight.parent / EPOCHS_DIR / kept[0])[1]["epoch"] == 2

    def start(seed: int, init_seed) -> dict:
        zero = TrainConfig.from_params(PARAMS, **(CFG | {"epochs": 0, "seed": seed, "init_seed": init_seed}))
        path = tmp_path / f"start_{seed}_{init_seed}.safetensors"
        train(train_dir, val_dir, ["MA"], zero, path, tmp_path / f"z{seed}{init_seed}.pt", "z")
        return load_file(path)

    same_a, same_b, own = start(0, 7), start(1, 7), start(1, None)
    assert all(torch.equal(same_a[k], same_b[k]) for k in same_a)
    assert not all(torch.equal(same_b[k], own[k]) for k in own)
