"""``python -m serving``: the same as ``digits-model-server``."""
import sys

from serving.model_servers.main import main

sys.exit(main())
