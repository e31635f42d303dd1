"""`python -m mxquant ...` (and `torchrun ... -m mxquant convert ...`): the `mxquant` command."""

import sys

from .cli import main

sys.exit(main())
