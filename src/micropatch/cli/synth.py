"""`micropatch synth`: write the synthetic datasets of the `synthetic` params section, each in its dataset's
official layout."""
from __future__ import annotations

import logging
from pathlib import Path

from micropatch.core.fileio import load_params, staged_folder
from micropatch.data.synthetic import LAYOUT_WRITERS, SyntheticSpec


def add_parser(sub) -> None:
    parser = sub.add_parser("synth", help="write the synthetic datasets of params `synthetic` in their official "
                                          "layouts (the embedded default is shipped: make data restores it)")
    parser.add_argument("--out", default=Path("data/sources"), type=Path, help="one folder per set is written here")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--only", nargs="+", help="write only these sets of params `synthetic`")
    parser.set_defaults(func=run)


def run(args) -> None:
    """Write the synthetic datasets of the `synthetic` params section, each in its dataset's official layout."""
    sets = load_params("synthetic", args.params)
    for name in args.only or list(sets):
        settings = dict(sets[name])
        layout, n_images, seed = settings.pop("layout"), settings.pop("n_images"), settings.pop("seed")
        with staged_folder(args.out / name) as staging:  # an interrupted run never leaves a half-written dataset
            ids = LAYOUT_WRITERS[layout](staging, n_images, seed, SyntheticSpec(**settings))
        logging.info("synth: %s: %d images (%dx%d, %s layout) in %s", name, len(ids), settings["width"],
                     settings["height"], layout, args.out / name)
