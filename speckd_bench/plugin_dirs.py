"""Where plugins live: the built-in task and method plugin folders (top-level tasks/ and baselines/, loaded
like a user's own) and the directories listed in $SPECKD_PLUGINS.

A wheel packs the built-in folders under speckd_bench/_builtin/; a source checkout (editable install, or
tests run from the repository) has them at the repository's top level, beside speckd_bench/.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).parent


def builtin_dir(kind: str) -> Path:
    """The folder of the built-in `tasks` or `baselines` plugins."""
    packed = _PACKAGE / "_builtin" / kind
    return packed if packed.is_dir() else _PACKAGE.parent / kind


def env_plugin_dirs() -> list[Path]:
    """The directories listed in $SPECKD_PLUGINS (os.pathsep-separated)."""
    return [Path(d) for d in os.environ.get("SPECKD_PLUGINS", "").split(os.pathsep) if d]
