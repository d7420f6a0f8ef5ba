"""`python -m masseg_search` = `masseg-search`."""
import sys

from masseg_search.cli import main

if __name__ == "__main__":  # not when a forkserver's worker imports the main module (`run`'s process pools)
    sys.exit(main())
