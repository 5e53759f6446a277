from __future__ import annotations

import pytest

from engine._quotas import Admission, admit, refill


def test_the_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    assert refill(0.0, 100.0, 100.25, per_second=10) == pytest.approx(2.5)
    assert refill(3.0, 100.0, 160.0, per_second=10) == 10.0  # never more than a second's worth
    assert refill(4.0, 100.0, 99.0, per_second=10) == 4.0  # another process's clock behind


def test_admission_takes_what_the_rate_and_the_queue_allow() -> None:
    assert admit(3, 10.0, queue_room=100, per_second=10) == Admission(3)
    rated = admit(10, 7.5, queue_room=100, per_second=10)
    assert (rated.admitted, rated.refused) == (7, "rate")
    assert rated.retry_after == pytest.approx(0.05)  # half a token left, a tenth per token
    full = admit(10, 10.0, queue_room=4, per_second=10)
    assert (full.admitted, full.refused) == (4, "queue")
    assert admit(1, 10.0, queue_room=-3, per_second=10) == Admission(0, "queue", 1.0)
    assert admit(2, 0.4, queue_room=0, per_second=10).refused == "queue"
