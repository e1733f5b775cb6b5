"""The cross-dataset study end to end, reduced: 2 datasets, their 3 combinations, 1 seed, tiny images, through
DVC's queue with 2 workers; then its bookkeeping: every combination present, zero-shot flags, no leakage, the same
held-out images in every run, and SWA, ensemble and soups all scored."""
import csv
import json
import shutil
import subprocess
import sys

import torch
import yaml
from helpers.workspace import REPO, dvc_workspace, run


def reduced_study(params: dict) -> None:
    """The study project's params, reduced: datasets synthetic (fine) and coarse, 1 seed, tiny images and runs."""
    params["synthetic"] = {
        "synthetic": {"layout": "idrid", "n_images": 6, "seed": 3, "width": 256, "height": 192},
        "coarse": {"layout": "retinal_lesions", "n_images": 6, "seed": 5, "width": 192, "height": 192,
                   "label_style": "coarse"}}
    params["study"] = {"datasets": ["synthetic", "coarse"], "seeds": [0, 1], "jobs": 2}
    params["roles"] = {"train_on": ["synthetic"], "test_on": {
        "synthetic_test": {"dataset": "synthetic", "split": "held_out"},
        "coarse_test": {"dataset": "coarse", "split": "held_out"}}}
    params["download"]["datasets"] = [
        {"name": "synthetic", "adapter": "idrid", "source": "../data/sources/synthetic"},
        {"name": "coarse", "adapter": "retinal_lesions", "source": "../data/sources/coarse"}]
    params["split"].update(test_fraction=0.25, val_fraction=0.5)
    params["patchify"].update(size=64, stride=32)
    params["train"].update(encoder="resnet18", epochs=2, max_steps_per_epoch=2, batch_size=8, init_seed=0,
                           swa_epochs=2, early_stopping_patience=5)
    params["strategies"] = {"swa_parts": ["full"], "bn_patches": 32}  # the parts: tests/test_averaging.py
    params["infer"]["stride"] = 64
    params["compute"].update(mode="fast", threads=1)  # as the study project's own params
    params["score"].update(bootstrap_draws=20, panels=False)


def test_reduced_study_runs_every_combination_through_the_dvc_queue(tmp_path, caplog):
    from micropatch.project.pipeline import render

    env = dvc_workspace(tmp_path, lambda params: None)
    init = tmp_path / "src/micropatch/__init__.py"  # marks the copy: the experiments must run it, not this checkout
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "0.1.0+copy"'))
    project = tmp_path / "study"
    project.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    reduced_study(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "dvc.yaml").write_text(render(project, code=tmp_path))
    (project / ".gitignore").write_text("/data/study/\n/data/train_state/\n")
    run([sys.executable, "-m", "micropatch.cli", "synth", "--params", "study/params.yaml", "--out", "data/sources"],
        tmp_path, env)
    run(["git", "add", "-A"], tmp_path, env)
    run(["git", "commit", "-qm", "study"], tmp_path, env)
    out = run([sys.executable, "-m", "micropatch.cli", "study", "combinations", "--project", "study"], tmp_path, env)
    assert "| baseline |" in out

    results = project / "metrics" / "study"
    with open(results / "records.csv", newline="") as f:
        records = list(csv.DictReader(f))
    combos = ["synthetic", "coarse", "synthetic+coarse"]
    strategies = ["baseline", "swa_full", "ensemble", "soup_encoder", "greedy_soup_encoder", "soup_decoder",
                  "greedy_soup_decoder", "soup_full", "greedy_soup_full"]
    found = {(r["combination"], r["strategy"], r["domain"]) for r in records}
    assert found == {(c, s, d) for c in combos for s in strategies for d in ("synthetic_test", "coarse_test")}
    for r in records:  # zero-shot exactly when the test domain's dataset is not among the training sets
        assert r["zero_shot"] == str(r["domain"].removesuffix("_test") not in r["combination"].split("+")), r
        assert 0 <= float(r["dice"]) <= 1 and 0 <= float(r["aupr_11"]) <= 1
    # two seeds: each soup's weights are the mean of its ingredients' (BatchNorm statistics recomputed, not
    # averaged), and its maps are neither seed's
    from micropatch.training.network import load_checkpoint

    work = project / "data" / "study"
    for combination in combos:
        soups = sorted((work / combination).glob("soup_full_*/model.safetensors"))
        assert soups, f"no full soup was averaged for {combination}"
        soup, config = load_checkpoint(soups[0])
        ingredients = [load_checkpoint(work / combination / "models" / f"{name}.safetensors")[0].state_dict()
                       for name in config["soup"]["ingredients"]]
        assert len(ingredients) == 2
        for key, value in soup.state_dict().items():
            if value.is_floating_point() and "running_" not in key:
                mean = (ingredients[0][key].double() + ingredients[1][key].double()) / 2
                assert torch.allclose(value.double(), mean, atol=1e-6), key
        maps = sorted((soups[0].parent / "synthetic_test").glob("*_MA.png"))
        assert maps
        for name in config["soup"]["ingredients"]:
            ingredient = work / combination / "maps" / name / "synthetic_test"
            assert any((m.read_bytes() != (ingredient / m.name).read_bytes()) for m in maps), name
    swa = {(r["combination"], r["domain"], r["seed"]): r["dice"] for r in records if r["strategy"] == "swa_full"}
    base = {(r["combination"], r["domain"], r["seed"]): r["dice"] for r in records if r["strategy"] == "baseline"}
    assert swa != base  # SWA averaged 2 epochs and recomputed BatchNorm: other maps

    import dvc.api

    held_out = set()
    for combo in combos:
        rev = f"study-{combo}-s0"
        leakage = json.loads(dvc.api.read("study/metrics/leakage.json", repo=str(tmp_path), rev=rev))
        assert leakage["total_leaks"] == 0 and leakage["images"] == 12
        manifest = list(csv.DictReader(dvc.api.read("study/data/splits/manifest.csv", repo=str(tmp_path),
                                                    rev=rev).splitlines()))
        held_out.add(frozenset(r["image_id"] for r in manifest if r["split"] == "held_out"))
        summary = json.loads(dvc.api.read("study/metrics/train.json", repo=str(tmp_path), rev=rev))
        assert summary["versions"]["micropatch"] == "0.1.0+copy"
        trained = {r["dataset"] for r in manifest if r["split"] == "train"}
        assert trained == set(combo.split("+"))
    assert len(held_out) == 1  # every combination is read on the same test images

    figure3 = list(csv.DictReader(open(results / "combinations.csv", newline="")))
    for domain in ("synthetic_test", "coarse_test"):  # figure 3: ordered by the number of training images
        sizes = [int(r["n_train_images"]) for r in figure3 if r["domain"] == domain]
        assert len(sizes) == 3 and sizes == sorted(sizes)
    from micropatch.experiments.study.project import combination_style

    found = json.loads(dvc.api.read("study/metrics/characterisation.json", repo=str(tmp_path), rev="study-coarse-s0"))
    for r in figure3:  # the background: the combination's style from the characterise stage
        assert r["style"] == combination_style(tuple(r["combination"].split("+")),
                                               {d: v["style"] for d, v in found.items()})
    table4 = json.loads((results / "strategies.json").read_text())
    assert set(table4) == set(strategies) and table4["baseline"]["pairs_leave_one_out"] == 2
    table3 = json.loads((results / "leave_one_out.json").read_text())
    assert {(r["domain"], r["scenario"]) for r in table3 if r["scenario"] == "in-domain"} == {
        ("synthetic_test", "in-domain"), ("coarse_test", "in-domain")}
    assert sum(r["combinations"] for r in table3) == 6  # each (combination, domain) pair once
    assert (results / "combinations.png").stat().st_size and (results / "strategies.png").stat().st_size

    # no stage reruns what a finished run already made: the third experiment, queued behind the first two, restores
    # download (same code, params and inputs in every run) from DVC's run cache (the study passes no --force).
    # Stages with a `cache: false` output (preprocess's and characterise's summaries) are never saved to DVC's run
    # cache (seen in .dvc/cache/runs), so they run again and are not checked
    logs = run([sys.executable, "-m", "dvc", "queue", "logs", "study-synthetic+coarse-s0"], project, env)
    assert "Stage 'download' is cached" in logs, logs[-3000:]

    # a second call queues nothing: every run is finished on this commit. The queueing step alone (the tables
    # after it would be the first call's again, checked above)
    from micropatch.experiments.study.project import StudyProject
    from micropatch.experiments.study.runs import queue_and_run

    with caplog.at_level("INFO", logger="micropatch.experiments.study.runs"):
        queue_and_run(StudyProject(project))
    assert "6 finished on this commit, 0 to queue" in caplog.text
    shutil.rmtree(tmp_path / ".dvc" / "tmp", ignore_errors=True)


def test_study_without_a_project_folder_is_refused_by_name(tmp_path):
    result = subprocess.run([sys.executable, "-m", "micropatch.cli", "study", "combinations", "--project",
                             str(tmp_path / "nowhere")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere: no params.yaml here" in result.stderr and "--project" in result.stderr


def test_a_lesion_absent_from_a_test_domain_does_not_enter_the_study_mean():
    """SE with no truth in the domain's images: Dice 0 with one false positive, 1 with none; either would move the
    mean of a strategy by a quarter. The mean is over the lesions present; none present is NaN, not 0."""
    import math

    from micropatch.experiments.study.scores import summary_scores

    def lesion(dice, aupr, truth_lesions):
        return {"dice": dice, "aupr_11": aupr, "lesions": truth_lesions, "n_images": 2, "resolution": "64x64",
                "precision": 0.5, "recall": 0.5, "iou": 0.3, "ap": 0.4, "lesion_sensitivity": 0.5,
                "fps_per_image": 1.0, "froc": 0.5, "degenerate": False}

    scored = {"lesions": {"MA": lesion(0.4, 0.3, 5), "HE": lesion(0.2, 0.1, 2), "SE": lesion(0.0, 0.0, 0)},
              "lesion_mean": {"dice": 0.2, "aupr_11": 0.1333}}
    summary = summary_scores(scored)
    assert abs(summary["dice"] - 0.3) < 1e-12
    assert abs(summary["aupr_11"] - 0.2) < 1e-12 and summary["lesions_scored"] == "HE+MA"
    scored["lesions"]["SE"]["dice"] = 1.0  # the same SE-free images, no false positive this time: no change
    assert summary_scores(scored) == summary
    assert math.isnan(summary_scores({"lesions": {"SE": lesion(0.0, 0.0, 0)}})["dice"])


def test_a_partial_call_keeps_the_whole_runs_time_and_adds_its_own():
    """time.json's total_minutes and its parts are one call's: a tables-only call after a whole run must not put
    its strategies time beside the whole run's total; a whole run replaces the record."""
    from micropatch.experiments.study.runs import study_timing

    whole_run = study_timing({}, {"experiments_minutes": 23.4, "strategies_and_tables_minutes": 3.2, "of": 14,
                                  "experiments_run": 14}, {"total_minutes": 27.0, "compute": {"mode": "fast"}})
    assert whole_run["total_minutes"] == 27.0 and whole_run["strategies_and_tables_minutes"] == 3.2
    tables_only = study_timing(whole_run, {"strategies_and_tables_minutes": 5.0},  # queued nothing: no counts
                               {"total_minutes": 5.1, "compute": {"mode": "fast"}})
    assert tables_only["strategies_and_tables_minutes"] == 3.2 and tables_only["total_minutes"] == 27.0
    assert tables_only["last_partial_call"] == {"strategies_and_tables_minutes": 5.0}
    again = study_timing(tables_only, {"experiments_minutes": 20.0, "strategies_and_tables_minutes": 3.0, "of": 14,
                                       "experiments_run": 14}, {"total_minutes": 23.0, "compute": {"mode": "fast"}})
    assert again["total_minutes"] == 23.0 and "last_partial_call" not in again
    first_partial = study_timing({}, {"strategies_and_tables_minutes": 4.0, "experiments_run": 3, "of": 14},
                                 {"total_minutes": 9.0, "compute": {"mode": "fast"}})
    assert first_partial == {"strategies_and_tables_minutes": 4.0, "experiments_run": 3, "of": 14}


def test_lesions_scored_is_spelled_one_way_whatever_order_the_scores_come_in():
    """The score stage's JSON has sorted lesion keys, a folder scored by the study the params' order: one spelling."""
    from micropatch.experiments.study.scores import summary_scores

    def lesion(dice, truth_lesions):
        return {"dice": dice, "aupr_11": dice / 2, "lesions": truth_lesions, "n_images": 2, "resolution": "64x64",
                "precision": 0.5, "recall": 0.5, "iou": 0.3, "ap": 0.4, "lesion_sensitivity": 0.5,
                "fps_per_image": 1.0, "froc": 0.5, "degenerate": False}

    scores = {"MA": lesion(0.2, 3), "HE": lesion(0.4, 1), "EX": lesion(0.6, 2)}
    forward = summary_scores({"lesions": scores})
    backward = summary_scores({"lesions": dict(reversed(list(scores.items())))})
    assert forward["lesions_scored"] == backward["lesions_scored"] == "EX+HE+MA"
