"""`python -m tinygate init MODEL ...` (or the `tinygate` command): see tinygate/init.py."""

from __future__ import annotations

import sys

from tinygate import init


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "init":
        print("usage: python -m tinygate init MODEL --data EVAL.npz [...]  (see: python -m tinygate init -h)",
              file=sys.stderr)
        return 2
    return init.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
