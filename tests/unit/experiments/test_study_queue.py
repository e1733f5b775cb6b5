"""The study restarts DVC's queue workers when they stop with runs still queued (micropatch.experiments.study.runs)."""
from micropatch.experiments.study.runs import stalled

# what `dvc queue status` printed when both workers of a study had stopped after their first run
STOPPED = """Task     Name                                Created    Status
4e55963  retinal_lesions-s0                  12:32 PM   Queued
6b8dbe1  retinal_lesions-s1                  12:33 PM   Queued
7a1cc47  synthetic-s0                        12:32 PM   Success
88fb743  synthetic-s1                        12:32 PM   Success

Worker status: 0 active, 0 idle
"""


def test_queued_runs_and_no_worker_is_a_stall():
    assert stalled(STOPPED)


def test_a_working_or_finished_queue_is_not():
    assert not stalled(STOPPED.replace("0 active, 0 idle", "1 active, 0 idle"))
    assert not stalled(STOPPED.replace("0 active, 0 idle", "0 active, 1 idle"))
    assert not stalled(STOPPED.replace("Queued", "Success"))
    assert not stalled(STOPPED.replace("Queued", "Running"))
