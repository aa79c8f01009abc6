"""`python -m runtime ...` is the same as the `mirage` command."""

import sys

from runtime.cli import main

sys.exit(main())
