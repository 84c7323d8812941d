"""Object metadata helpers: generated uids and timestamps."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

from control_plane.api.meta import new_uid, rfc3339


def test_new_uid_is_a_random_uuid4_string() -> None:
    uids = [new_uid() for _ in range(3000)]  # spans several batches of random bytes
    assert len(set(uids)) == len(uids)
    for uid in uids:
        parsed = uuid.UUID(uid)
        assert str(parsed) == uid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_rfc3339_matches_datetime_formatting_even_where_microseconds_round_up() -> None:
    rng = random.Random(7)
    stamps = [0.0, -0.5, 1.5, 1700000000.9999995, 1700000000.9999994, 1700000000.99999951, 4e9 + 0.999999]
    stamps += [rng.uniform(-1e9, 4e9) for _ in range(5000)]
    stamps += [int(rng.uniform(0, 4e9)) + f for f in (0.9999995, 0.99999949, 0.9999996, 1 - 1e-9) for _ in range(50)]
    for ts in stamps:
        assert rfc3339(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), ts
