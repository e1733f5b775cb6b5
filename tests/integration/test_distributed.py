"""Data-parallel training on this CPU: the train stage under torchrun with 2 gloo processes takes the steps one
process takes with the same global batch (same loss curve within float tolerance, same checkpoint format), and a
killed torchrun run resumes from its checkpoint."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.patchsets import patch_set
from helpers.workspace import REPO
from safetensors import safe_open

from micropatch.training import parallel

# 4 steps of a global batch of 8 per epoch: each of 2 processes takes 4 patches of every batch. SGD: Adam's first
# steps are lr * sign(gradient), which turns float rounding in near-zero gradients into whole steps.
TRAIN = dict(epochs=3, batch_size=8, max_steps_per_epoch=4, early_stopping_patience=10, seed=0, lr=0.01,
             optimizer="sgd",
             sync_batchnorm=True)


def project(root: Path, processes: int) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"] |= TRAIN | {"processes": processes}
    params["compute"] = {"mode": "reproducible", "threads": 1}  # 1 thread per process on these 2 cores
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    patches = root / "data" / "patches"
    patch_set(patches / "train", 48, 0, size=64)
    patch_set(patches / "val", 8, 1, size=64)
    (root / "manifest.csv").write_text("image_id,split\n")
    return root


def start(root: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "stages" / "train.py"), "--patches", "data/patches", "--manifest",
           "manifest.csv", "--model", "model.safetensors", "--state", "state/last.pt", "--history", "history.tsv",
           "--summary", "train.json"]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the kill reaches torchrun's workers


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-20000:]
    return out


def children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """pid exists and is not a zombie (dead, waiting for a parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def history(root: Path) -> list[dict]:
    with open(root / "history.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_loss_curve_and_resume_after_a_kill(tmp_path):
    single = project(tmp_path / "single", processes=1)
    finish(start(single))

    double = project(tmp_path / "double", processes=2)
    proc = start(double)  # killed once its first checkpoint exists, then rerun: it resumes
    deadline = time.time() + 300
    while not (double / "state" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun alone: its workers sit in sessions of their own
    proc.wait()
    # the workers end with torchrun (parallel.end_with_launcher): left running, they would finish the training and
    # write the model and the resume state beside the rerun below
    deadline = time.time() + 30
    while [pid for pid in workers if running(pid)]:
        assert time.time() < deadline, f"torchrun's workers {workers} outlived it"
        time.sleep(0.05)
    assert not (double / "model.safetensors").exists(), "the run ended before the kill; lengthen the epochs"
    out = finish(start(double))
    assert "resuming from" in out, out[-3000:]

    one, two = history(single), history(double)
    assert len(one) == len(two) == TRAIN["epochs"]
    for a, b in zip(one, two):
        for key in ("train_loss", "select_loss"):  # float rounding only (measured: ~2e-4 relative after 5 x 3 steps)
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-3), (key, a, b)
    # a loss curve that moved: the comparison is not between two untrained models
    assert float(one[-1]["train_loss"]) < float(one[0]["train_loss"])

    # the same checkpoint format: tensor names, shapes, dtypes and metadata keys, written once (rank 0)
    with safe_open(single / "model.safetensors", "pt") as a, safe_open(double / "model.safetensors", "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():
            ta, tb = a.get_tensor(key), b.get_tensor(key)
            assert (ta.shape, ta.dtype) == (tb.shape, tb.dtype), key
        assert sorted(yaml.safe_load(a.metadata()["micropatch"])) == sorted(yaml.safe_load(b.metadata()["micropatch"]))
    import json
    assert json.loads((double / "train.json").read_text())["processes"] == 2
    assert json.loads((single / "train.json").read_text())["processes"] == 1
    assert not (double / "state" / "last.pt").exists()  # finished: rank 0 removed the resume state


def test_shards_are_contiguous_and_uneven_batches_are_dropped():
    ctx = [parallel.Context(rank, 2, torch.device("cpu")) for rank in (0, 1)]
    batches = [[5, 1, 7, 3], [2, 6, 0, 4], [9, 8, 10]]
    shards = [parallel.shard_batches(batches, c) for c in ctx]
    assert shards == [[[5, 1], [2, 6]], [[7, 3], [0, 4]]]
    assert [a + b for a, b in zip(*shards)] == batches[:2]  # rank order rebuilds each global batch


def test_global_batchnorm_uses_the_whole_batchs_statistics_across_two_processes(tmp_path):
    """Each of 2 gloo ranks holds half of one batch; the outputs, running statistics and gradients are those of
    BatchNorm over the whole batch, computed here in float64 (a per-rank BatchNorm would normalise each half by
    its own mean and variance)."""
    out_file = tmp_path / "bn.npz"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    str(REPO / "tests" / "helpers" / "global_bn.py"), str(out_file)], check=True, capture_output=True,
                   timeout=300)
    got = np.load(out_file)
    x, upstream = got["batch"].astype(np.float64), got["upstream"].astype(np.float64)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    x_hat = (x - mean[None, :, None, None]) / np.sqrt(var + float(got["eps"]))[None, :, None, None]
    expected = x_hat * got["weight"][None, :, None, None] + got["bias"][None, :, None, None]
    np.testing.assert_allclose(got["out"], expected, rtol=1e-5, atol=1e-5)
    n, momentum = x.size / x.shape[1], float(got["momentum"])
    np.testing.assert_allclose(got["running_mean"], momentum * mean, rtol=1e-6)
    np.testing.assert_allclose(got["running_var"], (1 - momentum) + momentum * var * n / (n - 1), rtol=1e-6)
    np.testing.assert_allclose(got["weight_grad"], (upstream * x_hat).sum(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(got["bias_grad"], upstream.sum(axis=(0, 2, 3)), rtol=1e-4)
    halves = [x[:4], x[4:]]  # what two separate BatchNorms would have done differs: the check can tell them apart
    assert not np.allclose(np.concatenate([(h - h.mean((0, 2, 3))[None, :, None, None])
                                           / np.sqrt(h.var((0, 2, 3)) + 1e-5)[None, :, None, None] for h in halves])
                           * got["weight"][None, :, None, None] + got["bias"][None, :, None, None], got["out"],
                           atol=1e-3)
