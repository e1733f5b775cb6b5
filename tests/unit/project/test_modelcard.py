"""`micropatch ship` without the record's data: the card is rewritten only over the file the record's dvc.lock
names, and any other file is refused before anything is written."""
import hashlib

import pytest
import yaml

from micropatch.core.fileio import InputError
from micropatch.project import modelcard


def record_with_lock(root, md5):
    record = root / "results" / "rec"
    record.mkdir(parents=True)
    (record / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"operating-point": {"outs": [
        {"path": "data/model/release.safetensors", "hash": "md5", "md5": md5}]}}}))
    return record


def test_the_card_is_rewritten_over_the_locked_file_and_another_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(modelcard, "card", lambda target, record, shift, runtimes: f"card of {target.name}\n")
    out = tmp_path / "models" / "m"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"weights")
    record = record_with_lock(tmp_path, hashlib.md5(b"weights").hexdigest())
    assert modelcard.ship(record, out) == out / "model.safetensors"
    assert (out / "MODEL_CARD.md").read_text() == "card of model.safetensors\n"
    (out / "MODEL_CARD.md").unlink()
    (out / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(InputError, match="is not the one"):
        modelcard.ship(record, out)
    assert not (out / "MODEL_CARD.md").exists()


def test_a_benchmark_section_is_quoted_only_for_the_file_it_measured(tmp_path):
    result = tmp_path / "camera_shift_val.json"
    assert modelcard.unmeasured(None, "a" * 64, "Other cameras", "cmd") == []  # no result asked for
    missing = modelcard.unmeasured(result, "a" * 64, "Other cameras", "python benchmarks/camera_shift.py")
    assert "Not measured for this file yet" in "\n".join(missing) and "camera_shift.py" in "\n".join(missing)
    result.write_text('{"model_sha256": "' + "b" * 64 + '", "results": {}}')  # another model's figures
    assert not modelcard.measured_on(result, "a" * 64)
    assert modelcard.unmeasured(result, "a" * 64, "Other cameras", "cmd")
    result.write_text('{"model_sha256": "' + "a" * 64 + '", "results": {}}')
    assert modelcard.measured_on(result, "a" * 64) and modelcard.unmeasured(result, "a" * 64, "x", "cmd") == []


def test_an_int8_export_of_another_model_is_not_described_as_this_ones(tmp_path):
    import onnx

    from micropatch.core.fileio import sha256_file
    from micropatch.core.recipe import set_recipe

    model = tmp_path / "model.safetensors"
    model.write_bytes(b"this model's weights")
    export = tmp_path / "model-int8.onnx"
    calibration = {"images": 37, "windows": 296}
    for source, described in (("0" * 64, False), (sha256_file(model), True)):
        proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
        set_recipe(proto, {"onnx": {"source_sha256": source, "calibration": calibration}})
        onnx.save(proto, export)
        lines = "\n".join(modelcard.int8_lines(model))
        assert ("Its int8 export" in lines) == described and ("written from another file" in lines) != described


def test_ship_refuses_a_file_as_out_or_a_result_that_is_not_json_before_writing(tmp_path):
    record = record_with_lock(tmp_path, "0" * 32)
    (record / "data/model").mkdir(parents=True)
    (record / "data/model/release.safetensors").write_bytes(b"weights")
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("kept")
    with pytest.raises(InputError, match="not a folder"):
        modelcard.ship(record, not_a_folder)
    assert not_a_folder.read_text() == "kept"
    out, junk = tmp_path / "models" / "m", tmp_path / "runtimes.json"
    junk.write_bytes(b"\xff\x00 not json")
    with pytest.raises(InputError, match="not a benchmark's JSON"):
        modelcard.ship(record, out, runtimes=junk)
    assert not out.exists()
