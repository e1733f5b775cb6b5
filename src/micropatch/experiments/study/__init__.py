"""The cross-dataset study (`micropatch study combinations`): one DVC experiment per non-empty combination of the
study's training datasets and seed, queued with `dvc exp run --queue` and run by DVC's queue workers; each is an
ordinary run of the project's dvc.yaml (audit, SWA and scores included). Then, across each combination's seeds,
the prediction ensemble and the model soups, scored on the same held-out test domains; then the study's three
tables and figures (its figure 3, table 3 and figure 4).

project: the study folder and its experiments; runs: the queue and the whole study; strategies: ensembles and
soups; tables: the tables and figures.
"""
