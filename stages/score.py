"""Stage score: pooled P/R/Dice/IoU, aupr_11 and AP per domain and lesion; one JSON per domain and a table."""
import json
import logging
from pathlib import Path

from micropatch import logs
from micropatch.evaluation import score_domain, cross_domain_table
from micropatch.io import load_params, write_json, write_text
from micropatch.provenance import versions

METRICS = Path("metrics")


def main() -> None:
    logs.setup()
    params = load_params("score")
    results = {}
    for domain_file in sorted(Path("data/predictions").glob("*/domain.json")):
        domain = json.loads(domain_file.read_text())
        results[domain["domain"]] = score_domain(domain, domain_file.parent, Path("data/preprocessed"),
                                                 params, METRICS / "per_image" / f"{domain['domain']}.csv")
    write_json(METRICS / "scores.json", {"domains": results, "threshold": params["threshold"],
                                         "seed": params["seed"], "versions": versions()})
    write_text(METRICS / "cross_domain.md", cross_domain_table(results))
    logging.info("score:\n%s", cross_domain_table(results))


if __name__ == "__main__":
    main()
