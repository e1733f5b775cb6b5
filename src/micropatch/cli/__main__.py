"""`python -m micropatch.cli`: the `micropatch` command."""
import sys

from micropatch.cli import main

sys.exit(main())
