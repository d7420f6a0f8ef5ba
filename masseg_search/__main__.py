"""`python -m masseg_search` = `masseg-search`."""
import sys

from masseg_search.cli import main

sys.exit(main())
