"""`micropatch ablate` on a tiny record: a variant trains, is scored on full tune and val images and appends a row;
a test-time variant reuses the trained model; the protocol and overrides are applied in order."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.workspace import REPO

from micropatch.cli import main as cli
from micropatch.core.fileio import InputError
from micropatch.data.datasets import load_records
from micropatch.data.manifest import write_manifest
from micropatch.data.preprocessing import preprocess_record
from micropatch.experiments.ablation import load_variants, markdown, set_dotted, tempered, variant_params

SPLITS = {"IDRiD_01": "train", "IDRiD_02": "train", "IDRiD_03": "tune", "IDRiD_04": "val"}


def test_overrides_apply_protocol_then_variant_then_seed():
    params = {"train": {"epochs": 14, "seed": 0}, "patchify": {"size": 128}}
    out = variant_params(params, {"train.epochs": 6, "infer.mode": "fast"}, {"train.epochs": 2, "patchify.scale": 0.5},
                         seed=3)
    assert out == {"train": {"epochs": 2, "seed": 3}, "patchify": {"size": 128, "scale": 0.5},
                   "infer": {"mode": "fast"}}
    assert params["train"]["epochs"] == 14  # the record's params are not touched
    nested = {}
    set_dotted(nested, "a.b.c", 1)
    assert nested == {"a": {"b": {"c": 1}}}


def test_a_variants_file_without_protocol_or_variants_is_refused(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("variants: {}\n")
    with pytest.raises(InputError, match="needs a `protocol` mapping and a `variants` mapping"):
        load_variants(path)


@pytest.mark.parametrize("text, says", [("protocol: {a: 1\nvariants: [\n", "not valid YAML at line"),
                                         (None, "no such file"), (b"\xff\xfe\x00\x81", "not a YAML text file"),
                                         ("- a\n- b\n", "needs a `protocol` mapping")])
def test_a_variants_file_that_is_not_yaml_is_one_line_exit_2(tmp_path, text, says):
    """`micropatch ablate` (and `micropatch readme`, through the same reader) on a broken or missing file."""
    import subprocess
    import sys

    path = tmp_path / "ablations.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "micropatch.cli", "ablate", "baseline", "--variants-file", str(path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(path) in out.stderr and says in out.stderr


def test_a_temperature_moves_aupr_11_but_not_the_ranking():
    rng = np.random.default_rng(0)
    truth = rng.random((60, 60)) < 0.1
    probability = np.clip(rng.normal(80 + 100 * truth, 40), 0, 255).astype(np.uint8)
    _, hotter, _, _ = tempered(("x", probability, truth, None), 2.0)
    order = np.argsort(probability.ravel(), kind="stable")
    assert (np.diff(hotter.ravel()[order].astype(int)) >= 0).all()  # monotone: the ranking stays
    assert not np.array_equal(hotter, probability)
    assert tempered(("x", probability, truth, None), 1.0)[1] is probability


@pytest.fixture(scope="module")
def tiny_record(synthetic_idrid, tmp_path_factory) -> Path:
    """A record folder: the root params (MA), 4 synthetic images preprocessed, a manifest 2 train / 1 tune / 1 val."""
    record = tmp_path_factory.mktemp("record")
    shutil.copy(REPO / "params.yaml", record / "params.yaml")
    rows = []
    for r in load_records("idrid", synthetic_idrid, "idrid"):
        if r.image_id in SPLITS:
            print_ = preprocess_record(r, record / "data/preprocessed/idrid", ["MA"], 2.0, 8, 15)
            rows.append(print_ | {"split": SPLITS[r.image_id], "lesion_bearing": 1})
    write_manifest(record / "data/splits/manifest.csv", rows)
    return record


def variants_file(tmp_path: Path) -> Path:
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump({
        "protocol": {"compute.mode": "fast", "train.epochs": 2, "train.max_steps_per_epoch": 2, "train.batch_size": 4,
                     "train.encoder": "resnet18", "train.select_on": "ap", "train.monitor_val": False,
                     "train.swa_epochs": 2, "train.lr_schedule": "cosine", "infer.mode": "fast",
                     "train.early_stopping_patience": 9},
        "variants": {"baseline": {"why": "the record"},
                     "bce": {"why": "loss", "overrides": {"train.dice_weight": 0.2, "train.bce_weight": 0.8}},
                     "swa": {"why": "averaging", "from": "baseline", "swa_epochs": 2},
                     "temperature": {"why": "calibration", "from": "baseline", "temperature": True}}}))
    return path


def rows_of(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def test_ablate_trains_scores_and_appends_one_row_per_run(tiny_record, tmp_path, capsys):
    table = tmp_path / "ablations.csv"
    args = ["ablate", "--record", str(tiny_record), "--variants-file", str(variants_file(tmp_path)),
            "--table", str(table)]
    assert cli([*args, "baseline", "swa", "temperature"]) == 0
    baseline, swa, temperature = rows_of(table)
    assert [r["variant"] for r in (baseline, swa, temperature)] == ["baseline", "swa", "temperature"]
    assert float(baseline["train_minutes"]) > 0 and swa["train_minutes"] == temperature["train_minutes"] == "0"
    assert baseline["steps"] == "4" and baseline["patch_draws"] == "16"
    for row in (baseline, swa, temperature):
        for key in ("tune_ap", "val_ap", "val_aupr_11", "val_dice"):
            assert 0.0 <= float(row[key]) <= 1.0, (row["variant"], key)
        assert row["command"] == f"micropatch ablate {row['variant']} --seeds 0"
    # the temperature changes no ranking: AP as the baseline's, on the same maps
    assert abs(float(temperature["val_ap"]) - float(baseline["val_ap"])) < 0.02
    assert swa["val_ap"] != baseline["val_ap"] or swa["val_dice"] != baseline["val_dice"]  # another model
    assert "| baseline | 0 |" in markdown(table) and "| swa | 0 |" in capsys.readouterr().out
    # a second call reuses the trained model: the same scores, and a new row
    assert cli([*args, "baseline"]) == 0
    again = rows_of(table)[-1]
    assert again["val_ap"] == baseline["val_ap"] and len(rows_of(table)) == 4


def test_an_unknown_variant_is_one_line_and_exit_2(tiny_record, tmp_path, capsys):
    assert cli(["ablate", "nope", "--record", str(tiny_record), "--variants-file", str(variants_file(tmp_path)),
                "--table", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no variant named ['nope']" in err[0] and not (tmp_path / "t.csv").exists()
