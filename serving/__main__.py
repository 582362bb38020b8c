"""``python -m serving``: the same as ``digits-model-server``."""
import sys

from serving.server import main

sys.exit(main())
