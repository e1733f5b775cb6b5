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
