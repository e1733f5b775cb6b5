"""README tables come from metrics files, never by hand: the record table sits next to the paper's figures."""
import json

import pytest
import yaml

from micropatch.project.readme import RECORD_BEGIN, RECORD_END, update


def test_record_table_is_built_from_the_record_and_replaces_only_its_block(tmp_path):
    record = tmp_path / "results" / "idrid-ma"
    (record / "metrics" / "domains").mkdir(parents=True)
    ma = {"precision": 0.5, "recall": 0.25, "dice": 1 / 3, "iou": 0.2, "aupr_11": 0.31, "ap": 0.42,
          "lesion_sensitivity": 0.6, "fps_per_image": 12.5, "froc": 0.3}
    (record / "metrics" / "domains" / "idrid_val.json").write_text(json.dumps({"lesions": {"MA": ma}}))
    (record / "metrics" / "train.json").write_text(json.dumps(
        {"epochs_run": 4, "best_epoch": 3, "train_patches": 16907, "device": "cpu"}))
    (record / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"max_steps_per_epoch": 250, "batch_size": 16, "encoder_weights": None}}))
    metrics = tmp_path / "metrics"
    (metrics / "domains").mkdir(parents=True)
    (metrics / "cross_domain.md").write_text("| table |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin (micropatch readme) -->\nprevious-table\n<!-- results:end -->\n"
                      f"{RECORD_BEGIN}\nstale\n{RECORD_END}\noutro\n")
    best = tmp_path / "results" / "idrid-ma-best"
    (best / "metrics" / "domains").mkdir(parents=True)
    (best / "metrics" / "domains" / "idrid_val.json").write_text(json.dumps(
        {"lesions": {"MA": ma | {"dice": 0.5}}, "operating_point": {"threshold": 0.35, "min_area": 20}}))
    (best / "metrics" / "train.json").write_text(json.dumps(
        {"epochs_run": 14, "best_epoch": 12, "train_patches": 24239, "device": "cpu", "selection_split": "tune",
         "select_on": "aupr_11"}))
    (best / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"max_steps_per_epoch": 280, "batch_size": 16, "encoder_weights": None}}))
    update(readme, metrics, tmp_path / "results")
    text = readme.read_text()
    assert "stale" not in text and "previous-table" not in text and text.startswith("intro") and text.endswith("outro\n")
    assert "| micro-patching paper | 0.50 / 0 | 48.46 | 45.40 | 46.88 | 30.61 |" in text
    assert ("| micropatch (`results/idrid-ma`) | 0.50 / 0 | 50.00 | 25.00 | 33.33 | 20.00 | 0.3100 | 0.4200 | 60.0 | "
            "12.50 | 0.300 |") in text
    assert "| micropatch (`results/idrid-ma-best`) | 0.35 / 20 | 50.00 | 25.00 | 50.00 |" in text
    assert "4 epochs of 250 steps of 16 (16,000 patch draws from 16,907 training patches)" in text
    assert "epoch 12 selected on tune aupr_11" in text


def test_missing_block_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    (tmp_path / "metrics" / "domains").mkdir(parents=True)
    (tmp_path / "metrics" / "cross_domain.md").write_text("| t |\n")
    with pytest.raises(ValueError, match="has no block"):
        update(readme, tmp_path / "metrics", tmp_path / "no-record")


def test_ablation_and_camera_shift_tables_come_from_the_benchmark_results(tmp_path):
    from micropatch.project.readme import ablation_block

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    row = {"aupr_11": 0.25, "ap": 0.3, "dice": 0.45, "lesion_sensitivity": 0.7, "fps_per_image": 12.0}
    (results / "record_ablations.json").write_text(json.dumps(
        {"record": "idrid-ma-best", "images": 11, "rows": {"paper point": row}}))
    (results / "camera_shift.json").write_text(json.dumps(
        {"images": 11, "inference": {"mode": "fast", "precision": "int8"}, "train_fov_diameter": 3500,
         "results": {"native": row | {"dice_vs_native": 1.0}, "1440x960": row | {"dice": 0.36, "dice_vs_native": 0.8}}}))
    text = ablation_block(results / "record_ablations.json", results / "camera_shift.json")
    assert "| paper point | 0.2500 | 0.3000 | 45.00 | 70.0 | 12.00 |" in text
    assert "| 1440x960 | 36.00 | 80 % | 0.2500 | 70.0 | 12.00 |" in text
    assert "camera_shift.py" not in text and "benchmarks/results/camera_shift.json" in text


def test_four_lesion_table_sets_each_lesion_and_the_mean_beside_the_studys_idrid_rows(tmp_path):
    from micropatch.project.readme import lesions_block

    record = tmp_path / "idrid-4lesions"
    (record / "metrics" / "domains").mkdir(parents=True)
    base = {"precision": 0.5, "recall": 0.5, "dice": 0.5, "iou": 0.33, "ap": 0.4, "lesion_sensitivity": 0.7,
            "fps_per_image": 3.0, "froc": 0.3}
    lesions = {name: base | {"aupr_11": value} for name, value in (("MA", 0.2), ("HE", 0.4), ("EX", 0.6), ("SE", 0.8))}
    (record / "metrics" / "domains" / "idrid_val.json").write_text(json.dumps(
        {"lesions": lesions, "lesion_mean": base | {"aupr_11": 0.5},
         "operating_point": {"threshold": 0.4, "min_area": 10, "per_lesion": {"MA": {"threshold": 0.15,
                                                                                     "min_area": 50}}}}))
    (record / "metrics" / "train.json").write_text(json.dumps(
        {"epochs_run": 6, "best_epoch": 6, "train_patches": 44704, "device": "cpu", "selection_split": "tune",
         "select_on": "aupr_11"}))
    (record / "params.yaml").write_text(yaml.safe_dump({"train": {"max_steps_per_epoch": 180, "batch_size": 16}}))
    text = lesions_block(record)
    assert "| MA | 0.2000 | 0.4000 | 0.15 / 50 | 50.00 | 70.0 | 3.00 | 0.484 | 0.5017 |" in text
    assert "| EX | 0.6000 | 0.4000 | 0.40 / 10 | 50.00 | 70.0 | 3.00 | 0.842 | 0.8850 |" in text  # the model-wide point
    assert "| mean | 0.5000 | 0.4000 | - | 50.00 | 70.0 | 3.00 | 0.640 | - |" in text
    assert "6 epochs of 180 steps of 16 (17,280 patch draws from 44,704 training patches)" in text


def test_study_block_comes_from_the_study_project_and_its_time(tmp_path):
    """The cross-dataset study's README block: its measured time, figure-4 and table-3 tables from metrics/study."""
    from micropatch.project.readme import STUDY_BEGIN, STUDY_END, STUDY_PROJECT, study_block

    out = tmp_path / "results" / STUDY_PROJECT / "metrics" / "study"
    out.mkdir(parents=True)
    (out / "time.json").write_text(json.dumps({"of": 14, "experiments_run": 14, "workers": 2, "experiments_minutes":
                                               51.5, "strategies_and_tables_minutes": 6.2, "cpu_cores": 2,
                                               "experiments_committed": ["2026-11-30T21:40:50", "2026-11-30T22:30:00"],
                                               "total_minutes": 58.1, "compute": {"mode": "fast", "threads": 1}}))
    (out / "strategies.md").write_text("| strategy | x |\n| baseline | 1 |\n")
    (out / "leave_one_out.md").write_text("| test domain | y |\n")
    block = study_block(tmp_path / "results" / STUDY_PROJECT)
    assert block.startswith(STUDY_BEGIN) and block.endswith(STUDY_END)
    assert "14 experiments (14 run in that call) through the DVC queue with 2 workers in 51.5 min" in block
    assert "commits from 2026-11-30T21:40:50 to 2026-11-30T22:30:00" in block
    assert "queueing to tables, in **58.1 min**, compute mode `fast` with 1 thread(s) per worker" in block
    assert "| baseline | 1 |" in block and "| test domain | y |" in block
