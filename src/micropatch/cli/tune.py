"""`micropatch tune`: run (or join) an Optuna study over params.yaml's `tune.space`; optionally write the best
values back."""
from __future__ import annotations

import logging
from pathlib import Path

from micropatch.core import compute
from micropatch.core.fileio import InputError, load_params


def add_parser(sub) -> None:
    parser = sub.add_parser("tune", help="hyper-parameter search (Optuna: TPE, pruning) over params.yaml "
                                         "tune.space, on "
                                         "the pipeline's train patches and selection split; workers may share a study")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--patches", type=Path, default=Path("data/patches"))
    parser.add_argument("--preprocessed", type=Path, default=Path("data/preprocessed"))
    parser.add_argument("--manifest", type=Path, default=Path("data/splits/manifest.csv"))
    parser.add_argument("--work", type=Path, default=Path("data/tune"),
                        help="cached patch sets, per-trial dvclive folders, <study>/best.json")
    parser.add_argument("--storage", help="SQLAlchemy URL (default: params tune.storage, a SQLite file); "
                                          "postgresql+psycopg2://user@host:port/db lets workers on many "
                                          "machines share it")
    parser.add_argument("--study", help="study name (default: params tune.study)")
    parser.add_argument("--trials", type=int, help="stop when the study holds this many finished trials, whichever "
                                                   "workers ran them (default: params tune.trials)")
    parser.add_argument("--seed", type=int, help="TPE sampler seed (default: params tune.seed); give each worker "
                                                 "its own, or they propose the same first trials")
    parser.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats")
    parser.add_argument("--grace", type=int, default=180,
                        help="a running trial without a heartbeat for this long is failed (its worker died) "
                             "and retried")
    parser.add_argument("--max-retry", type=int, default=1, help="retries of a trial whose worker died")
    parser.add_argument("--no-dvc-exp", action="store_true",
                        help="log trials with dvclive without saving DVC experiments")
    parser.add_argument("--write-best", action="store_true",
                        help="write the best trial's values into params.yaml (comments kept), for `dvc repro`")
    parser.set_defaults(func=run)


def run(args) -> int:
    """The study's trials; the compute mode is pinned before the trials' torch-land code is imported."""
    params = load_params(path=args.params)
    tune = params["tune"]
    compute.configure(**params["compute"])  # before torch is imported: it pins what decides the bits
    from micropatch.experiments.tuning import Workspace, run_study, write_best

    workspace = Workspace(Path(args.params), args.patches, args.preprocessed, args.manifest, args.work)
    if not (args.patches / "train" / "meta.json").is_file():
        raise InputError(f"{args.patches}/train holds no patch set: run `dvc repro patchify` first (the study "
                         "trains on the pipeline's train patches and scores on its selection split)")
    study = run_study(workspace, args.storage or tune["storage"], args.study or tune["study"],
                      args.trials or tune["trials"], tune["seed"] if args.seed is None else args.seed,
                      args.heartbeat, args.grace, args.max_retry, dvc_experiments=not args.no_dvc_exp)
    if args.write_best:
        try:
            best = study.best_trial
        except ValueError:
            raise InputError(f"study {study.study_name} has no complete trial yet: nothing to write") from None
        write_best(Path(args.params), best.params)
        logging.info("tune: wrote trial %d's values (%s %.4f) into %s: `dvc repro` trains them", best.number,
                     tune["objective"], best.value, args.params)
    return 0
