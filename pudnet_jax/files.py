"""Writing result files so that a crash never leaves a half-written one behind."""

import json
import os


def write_json(path: str, obj, **dump_kwargs) -> str:
    """json.dump to `path` atomically: a temporary file renamed into place."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, **dump_kwargs)
    os.replace(tmp, path)
    return path
