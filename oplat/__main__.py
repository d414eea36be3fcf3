"""``python -m oplat`` and the ``oplat`` console script.

The CLI is imported inside a guard: a Ctrl-C while Python is still importing it ends
with oplat's one line and status 130, not a traceback.
"""

import sys


def run() -> None:
    try:
        from oplat.cli import main
    except KeyboardInterrupt:
        sys.stderr.write("oplat: interrupted\n")
        sys.exit(130)
    sys.exit(main())


if __name__ == "__main__":
    run()
