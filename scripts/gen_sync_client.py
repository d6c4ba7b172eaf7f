"""Generate ``service/_sync_client.py`` (``Client``) from ``service/_async_client.py`` (``AsyncClient``) with unasync.

    python scripts/gen_sync_client.py            # rewrite the file
    python scripts/gen_sync_client.py --check    # exit 1 when the file is out of date (tests/service/test_client.py)

The output goes through ruff (imports sorted, formatted), as the rest of the code does.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "service" / "_async_client.py"
TARGET = ROOT / "service" / "_sync_client.py"
HEADER = "# Generated from service/_async_client.py by scripts/gen_sync_client.py: do not edit.\n"

REPLACEMENTS = {
    "AsyncClient": "Client",
    "AsyncRetrying": "Retrying",
    "aclose": "close",
    "aclosing": "closing",
    "AsyncGenerator": "Generator",
    "aconnect_sse": "connect_sse",
    "aiter_sse": "iter_sse",
    "aread": "read",
    "areport": "report",
    "asleep": "sleep",
}


def generate() -> str:
    """The sync client's source, formatted."""
    import unasync

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "_async_client.py"
        shutil.copyfile(SOURCE, source)
        rule = unasync.Rule("/_async_client.py", "/_sync_client.py", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(source)], [rule])
        text = HEADER + (Path(tmp) / "_sync_client.py").read_text(encoding="utf-8")
    ruff = [sys.executable, "-m", "ruff"]
    where = ["--config", str(ROOT / "pyproject.toml"), "--stdin-filename", str(TARGET), "-"]
    for step in (["check", "--select", "I", "--fix-only", "--quiet"], ["format"]):  # sort the renamed imports
        text = subprocess.run([*ruff, *step, *where], input=text, capture_output=True, text=True, check=True).stdout
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python scripts/gen_sync_client.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
