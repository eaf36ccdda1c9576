"""`python -m genome_index.cli`: the command line, as the `genome-index` script runs it."""

import sys

from genome_index.cli.app import main

sys.exit(main())
