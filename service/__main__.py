"""``python -m service [OPTIONS]``: the same as ``longtail serve [OPTIONS]`` (settings from LONGTAIL_* / .env).

One implementation: the options, the store check and the "install the server extra" message are the CLI's.
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
