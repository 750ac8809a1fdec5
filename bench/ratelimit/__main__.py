"""``python -m bench.ratelimit``: see ``bench.ratelimit`` (``make bench-ratelimit``)."""

import sys

from bench.ratelimit import main

if __name__ == "__main__":
    sys.exit(main())
