#!/usr/bin/env python
"""Grid search: ``python run_param_tuner.py --config config/tuner/X.yaml --gpu 0 1 [0 1 …] [--tag 3]``."""
import os
import sys

# Import this checkout's package even when it is not installed (or another copy is).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from interformer_fuxi.tuner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
