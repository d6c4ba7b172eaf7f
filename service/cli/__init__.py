"""The ``longtail`` command line: run the service, submit and follow jobs, read results, run the demo.

    longtail demo [--quick] [--keep]           start a local service + Ray, compare nine losses on digits_lt
    longtail serve [--host --port --ray-address --store --state-dir --data-root ...]
    longtail submit SPEC.yaml [--wait]         queue a job (with --wait: live progress, then the results table)
    longtail status [ID]                       one job, or every job
    longtail results ID [--json | --csv] [--plots DIR]
    longtail cancel ID
    longtail losses | datasets | models        what a spec can name (asked of the service)

``--url`` (``$LONGTAIL_URL``, default http://127.0.0.1:8000) and ``--token`` (``$LONGTAIL_TOKEN``) go before the
command. Errors are one line on stderr and a non-zero exit: 1 for errors, 2 for usage, 130 when interrupted.

Modules: ``commands`` (Typer), ``formatting`` (Rich tables, progress display), ``demo`` (the demo's spec and run),
``supervise`` (the demo's child service, psutil). The client commands need only the base install; the demo's
supervision is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.cli.commands import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, app, main
from service.cli.demo import DEMO_SPEC, QUICK_LOSSES, quick_demo_spec, submit_when_accepted
from service.cli.formatting import format_config, format_table, results_csv, results_table

if TYPE_CHECKING:
    from service.cli.supervise import local_service, stop_process_tree

__all__ = [
    "DEMO_SPEC",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "QUICK_LOSSES",
    "app",
    "format_config",
    "format_table",
    "local_service",
    "main",
    "quick_demo_spec",
    "results_csv",
    "results_table",
    "stop_process_tree",
    "submit_when_accepted",
]

_LAZY = {
    "local_service": "service.cli.supervise",
    "stop_process_tree": "service.cli.supervise",
}


def __getattr__(name: str) -> Any:
    # the demo's supervision needs psutil (the server extra): imported when first asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'service.cli' has no attribute {name!r}")
