"""``python -m model_worker --model-path DIR`` (flags or SURGECAST_WORKER_* env vars)."""

import sys

from model_worker.api import main

sys.exit(main())
