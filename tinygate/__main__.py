"""`python -m tinygate`: the tinygate command (tinygate.cli)."""

import sys

from tinygate.cli import main

if __name__ == "__main__":
    sys.exit(main())
