"""Reading a JSON file the user pointed at: one clear line when it is missing or not JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json"]


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed contents of ``path``; ``FileNotFoundError`` / ``ValueError`` naming ``what`` and the
    file (and the line and column of a syntax error) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON: {err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not a text file") from None
