"""``python -m service.cli ...``: the ``longtail`` command."""

import sys

from service.cli.commands import main

sys.exit(main())
