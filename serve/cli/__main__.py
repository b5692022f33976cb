"""``python -m serve.cli``: the ``portrait`` command without its entry point."""

import sys

from serve.cli import main

sys.exit(main())
