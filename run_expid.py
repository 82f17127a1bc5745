#!/usr/bin/env python
"""Train and evaluate an expid: ``python run_expid.py [--config config/] --expid NAME [--gpu -1|0|1…]``."""
import os
import sys

# Import this checkout's package even when it is not installed (or another copy is).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interformer_fuxi.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
