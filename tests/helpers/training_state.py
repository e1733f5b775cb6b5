"""What the kill-and-resume tests read from a training's resume state while it runs."""
from pathlib import Path

import torch


def saved_epoch(state: Path) -> int:
    """The last epoch whose resume state is on disk (0 before the first is saved, or after the state is removed)."""
    return torch.load(state, weights_only=True)["progress"]["epoch"] if state.is_file() else 0
