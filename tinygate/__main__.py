"""`python -m tinygate init MODEL ...`: see tinygate/init.py."""

import sys

from tinygate import init

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "init":
        print("usage: python -m tinygate init MODEL --data EVAL.npz [...]  (see: python -m tinygate init -h)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(init.main(sys.argv[2:]))
