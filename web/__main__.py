"""``python -m web``: the draw-a-digit app (the same as ``digits ui``)."""
import sys

from web.server import main

sys.exit(main())
