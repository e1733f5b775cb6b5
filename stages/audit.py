"""Stage audit: fail the pipeline on any patient, byte, near-duplicate or patch-provenance leak across splits."""
import sys

from micropatch import logs
from micropatch.cli import run_audit
from micropatch.io import load_params

if __name__ == "__main__":
    logs.setup()
    sys.exit(run_audit("data/splits/manifest.csv", "data/patches", "metrics", load_params("audit")["phash_threshold"]))
