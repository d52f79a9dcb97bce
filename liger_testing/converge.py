"""``python -m liger_testing.converge``: the convergence runner's command line.

Trains a patched and an unpatched tiny Hugging Face model side by side on the shipped dataset and
exits non-zero when they diverge; see ``--help`` and :mod:`liger_testing.convergence`.
"""

from __future__ import annotations

import sys

from liger_testing.convergence.cli import main

if __name__ == "__main__":
    sys.exit(main())
