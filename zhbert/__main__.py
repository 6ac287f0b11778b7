"""`python -m zhbert ...` = the `zhbert` command."""

import sys

from zhbert.cli import main

sys.exit(main())
