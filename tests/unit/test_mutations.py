"""The mutation list (tests/mutation/mutate.py) still applies: each one-line break names a line that is in the
code today and a test that exists, so the demonstration that every test can fail cannot rot unnoticed."""
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def mutations():
    spec = importlib.util.spec_from_file_location("mutate", REPO / "tests/mutation/mutate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.M


def test_every_mutation_names_a_line_of_today_and_a_test_that_exists():
    listed = mutations()
    assert len(listed) >= 10
    for name, file, old, new, test in listed:
        assert old != new, name
        assert (REPO / file).read_text().count(old) == 1, f"{name}: its line is not once in {file}"
        test_file, _, test_name = test.partition("::")
        source = (REPO / test_file).read_text()
        if test_name:
            assert re.search(rf"def {re.escape(test_name.split('[')[0])}\(", source), f"{name}: no {test}"
