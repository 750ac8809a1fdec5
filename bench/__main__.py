"""``python -m bench``: the login-flood benchmark (see ``bench.login_flood``)."""

import sys

from bench.login_flood import main

if __name__ == "__main__":
    sys.exit(main())
