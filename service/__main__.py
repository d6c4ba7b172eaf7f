"""``python -m service [--host H] [--port P]``: run the API with uvicorn (settings from LONGTAIL_* / .env)."""

from __future__ import annotations

import argparse
import logging
import sys

from service.app import create_app
from service.server import serve
from service.settings import Settings
from service.store import JobStore, StoreUnavailable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="bind address (default LONGTAIL_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default LONGTAIL_PORT or 8000)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        JobStore(str(settings.store_url)).close()  # an unreachable database: one clear line, exit 1
    except StoreUnavailable as exc:
        sys.exit(f"error: {exc}")
    app = create_app(settings)
    serve(app, settings, log_level=args.log_level)


if __name__ == "__main__":
    main()
