"""``python -m blockpool ARGS``: the ``blockpool`` command."""

import sys

from blockpool.cli import module_main

sys.exit(module_main())
