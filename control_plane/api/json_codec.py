"""The API server's JSON: the shared codec (orjson with ``json``'s results), see
``skiff.client.json_codec``."""

from skiff.client.json_codec import dumps, loads

__all__ = ["dumps", "loads"]
