"""`python -m infra.review --stack <stack> [--base <git ref>]`: see infra/review/cli.py."""

import sys

from infra.review.cli import main

sys.exit(main())
