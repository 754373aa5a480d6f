"""The schema of params.yaml's `parchgrad` section (see replication.settings)."""

from __future__ import annotations

from typing import Any

# TEMPORARY: an unchecked mapping until the section's classes are written.
ParchGrad = dict[str, Any]
