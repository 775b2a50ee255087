"""The end-to-end test reuses the adapter tests' real-Prometheus and fake-API helpers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "adapters"))
