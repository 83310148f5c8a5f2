"""The ``ctq`` command (``[project.scripts]``): :mod:`ctq.cli` imported under a Ctrl-C guard.

Importing the command's modules (asyncpg, click, rich, pydantic...) takes 0.3-0.7 s; a Ctrl-C in
that time printed a KeyboardInterrupt traceback (a user trial). It ends the command as any
interruption does: one line, exit 130 (and, with ``--json``, the one JSON document).
"""

import json
import sys


def main() -> None:
    try:
        from ctq.cli import main as cli
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        if "--json" in sys.argv[1:]:
            print(json.dumps({"status": "interrupted", "error": "interrupted", "exit_code": 130, "run_id": None},
                             indent=2))
        sys.exit(130)
    cli()
