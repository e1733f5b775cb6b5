"""The README and docs/: generated blocks built from committed results and current, every block placed, no
hand-written figure outside them, links that resolve, a README a newcomer reads in one sitting."""
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers.workspace import REPO

from micropatch.cli import parser
from micropatch.project import readme
from micropatch.project.readme import MARKER, generators, pages, render, update

BLOCKS = generators(parser())  # every generator, the CLI page's included

README_LINES = 200


def test_every_generated_block_of_the_repository_is_current():
    """What `micropatch readme` would write is what is committed (make run calls it after dvc repro)."""
    for page in pages(REPO):
        text = page.read_text()
        assert render(text, REPO, page, BLOCKS)[0] == text, f"{page.relative_to(REPO)}: run `micropatch readme`"


def test_every_generator_has_a_block_on_some_page_and_no_block_is_unknown():
    placed = {m.group(1) for page in pages(REPO) for m in MARKER.finditer(page.read_text())}
    assert placed == set(BLOCKS)


def test_the_readme_is_short_and_links_into_docs_that_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    assert "make run" in text and "make test" in text and "make install" in text
    for page in pages(REPO):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http", "mailto")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to a missing {target}"


# --- no hand-written figures ---------------------------------------------------------------------------------------

# Numbers allowed in prose outside generated blocks, code spans and code blocks: constants of the method, of the
# datasets and of the papers cited, each with the reason it is not a measurement of this project.
ALLOWED_NUMBERS = {
    "0", "1", "2", "3", "4", "8", "10", "16",            # counts in words: one / two / four lesions, 8-connected
    "0.5", "0.1", "0.34", "0.8",                         # the paper's threshold; thresholds of aupr_11; cited scales
    "128", "64", "256", "255",                           # window, stride; 256 levels / bits; p = value / 255
    "130",                                               # the exit status after Ctrl-C
    "90",                                                # rotations by multiples of 90 degrees
    "11",                                                # the 11 thresholds of aupr_11; IDRiD's 11 val images
    "54", "27", "43", "6", "37",                         # IDRiD: training images, test half, the paper's split
    "3.11",                                              # the Python version
    "0.5017", "0.525", "0.534",                          # published IDRiD MA AUPR (challenge leader, later methods)
    "2020",                                              # Porwal et al. 2020 (the IDRiD challenge paper)
    "10.21227", "H25W98",                                # IDRiD's DOI
    "20191227",                                          # Retinal-Lesions' release folder name
    "127",                                               # Retinal-Lesions' label value for uncertain lesions
    "4.0",                                               # IDRiD's licence, CC BY 4.0
    "29400",                                             # the torchrun rendezvous port of the example
    "200",                                               # the README's line limit
}
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def prose(text: str) -> str:
    """text less generated blocks, fenced code, inline code, link targets and HTML comments."""
    text = MARKER.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)


def hand_written_numbers(text: str) -> list[str]:
    return [n for n in NUMBER.findall(prose(text)) if n not in ALLOWED_NUMBERS]


def test_no_page_holds_a_hand_written_figure():
    found = {page.relative_to(REPO).as_posix(): hand_written_numbers(page.read_text()) for page in pages(REPO)}
    assert not {page: numbers for page, numbers in found.items() if numbers}


def test_the_figure_check_sees_a_new_hand_written_number():
    assert hand_written_numbers("Training took 93 minutes.") == ["93"]
    assert hand_written_numbers("<!-- results:begin (micropatch readme) -->\n93.5\n<!-- results:end -->") == []
    assert hand_written_numbers("run `dvc exp run -S train.epochs=7`, then ```\nmake 93\n```") == []
    assert hand_written_numbers("the paper's threshold 0.5 on 54 images") == []


# --- the generators, on made-up results --------------------------------------------------------------------------

def made_up_record(root: Path, name: str, ma: dict, point: dict, train: dict) -> None:
    record = root / "results" / name
    (record / "metrics" / "domains").mkdir(parents=True)
    (record / "metrics" / "domains" / "idrid_val.json").write_text(json.dumps(
        {"lesions": {"MA": ma}, "operating_point": point}))
    (record / "metrics" / "train.json").write_text(json.dumps(train))
    (record / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"max_steps_per_epoch": 280, "batch_size": 16, "precision": "bf16"}}))


MA = {"precision": 0.5, "recall": 0.25, "dice": 1 / 3, "iou": 0.2, "aupr_11": 0.31, "ap": 0.42,
      "lesion_sensitivity": 0.6, "fps_per_image": 12.5, "froc": 0.3}
TRAIN = {"epochs_run": 14, "best_epoch": 12, "train_patches": 24239, "device": "cpu", "selection_split": "tune",
         "select_on": "ap"}


def test_the_record_table_is_built_from_the_records_and_marks_degenerate_maps(tmp_path):
    made_up_record(tmp_path, "idrid-ma-best", MA, {"threshold": 0.35, "min_area": 20}, TRAIN)
    made_up_record(tmp_path, "idrid-ma-v2", MA | {"degenerate": True}, {"threshold": 0.5, "min_area": 0}, TRAIN)
    text = readme.real_idrid(tmp_path)
    assert "| micro-patching paper | 0.50 / 0 | 48.46 | 45.40 | 46.88 | 30.61 |" in text
    assert ("| micropatch (`results/idrid-ma-best`) | 0.35 / 20 | 50.00 | 25.00 | 33.33 | 20.00 | 0.3100 | 0.4200 | "
            "60.0 | 12.50 | 0.300 |") in text
    assert "| micropatch (`results/idrid-ma-v2`) | 0.50 / 0 | 50.00 | 25.00 | 33.33 | 20.00 | 0.3100* |" in text
    assert "14 epochs of 280 steps of 16 (62,720 patch draws from 24,239 training patches), random init, bf16" in text
    assert "epoch 12 selected on tune ap" in text


def test_a_page_is_rewritten_in_its_blocks_only_and_an_unknown_block_is_an_error(tmp_path):
    blocks = {"results": lambda root: "fresh table"}
    page = tmp_path / "page.md"
    text = "intro\n<!-- results:begin (micropatch readme) -->\nstale\n<!-- results:end -->\noutro\n"
    new, found = render(text, tmp_path, page, blocks)
    assert found == {"results"} and new.startswith("intro") and new.endswith("outro\n")
    assert "fresh table" in new and "stale" not in new
    with pytest.raises(ValueError, match="has no generator"):
        render("<!-- nope:begin (micropatch readme) -->\n<!-- nope:end -->", tmp_path, page, blocks)


def test_update_refuses_a_repository_where_a_block_is_on_no_page(tmp_path):
    (tmp_path / "README.md").write_text("no blocks\n")
    (tmp_path / "docs").mkdir()
    with pytest.raises(ValueError, match=r"no page holds the block\(s\) \['results'\]"):
        update(tmp_path, {"results": lambda root: "t"})


def test_the_camera_shift_block_reads_both_splits_and_the_tolerance_choice(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    row = {"dice": 0.4, "ap": 0.3, "dice_vs_native": 1.0}
    run = {"images": 6, "model": "models/idrid-ma/model.safetensors", "operating_point": {"threshold": 0.15,
           "min_area": 50}, "inference": {"runtime": "openvino", "precision": "int8"},
           "results": {"native": row, "1440x960 off": row | {"dice": 0.1}, "1440x960 on": row | {"dice": 0.36},
                       "1440x960 auto": row | {"dice": 0.36, "dice_vs_native": 0.9}},
           "choice": {"by_size": {"1440x960": {"fov_ratio": 0.336}}, "tolerances_right_at_every_size": [0.1, 0.15]}}
    (results / "camera_shift_tune.json").write_text(json.dumps(run))
    text = readme.camera_shift(tmp_path)
    assert "| 1440x960 | 0.34 | 10.00 | 36.00 | **36.00** | 90 % | 0.3000 |" in text
    assert "at every size: 0.1, 0.15." in text and "no val run is committed yet" in text


def test_the_reference_pages_follow_the_code_and_the_params():
    cli = readme.cli_reference(parser())
    for command in ("predict", "evaluate", "ablate", "datasets inspect", "study"):
        assert f"### micropatch {command}" in cli
    assert "--rescale-fov {auto,on,off}" in cli
    params = readme.params_reference(REPO)
    assert "| `train.precision` | `fp32` |" in params and "| `patchify.scale` | `1.0` |" in params
    keys = re.findall(r"^\| `([\w.]+)` \|", params, re.M)
    assert keys.index("split.seed") < keys.index("train.epochs") < keys.index("tune.trials")
