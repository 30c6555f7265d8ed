"""``python -m engine ...``: see :mod:`engine.cli`."""

import os
import sys

if len(sys.argv) > 1 and sys.argv[1] in ("serve", "client"):
    # torch.distributed logs every failed connection attempt with a C++ stack trace; a networked run
    # reports what went wrong in one line of its own instead. Set before torch is imported.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from engine.cli import main  # noqa: E402

raise SystemExit(main())
