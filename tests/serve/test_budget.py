"""The pixel budget of the server: uploads take their pixels from it before decoding and give them back after,
errors included; when it is full an upload waits a little, then is answered 503 with Retry-After."""

import io
import threading
import time

import pytest
from fastapi import HTTPException
from PIL import Image

from mumo.serve.app import Limits, decode_upload
from mumo.serve.budget import BudgetFull, PixelBudget


def test_pixels_are_taken_and_given_back_errors_included():
    budget = PixelBudget(100, wait_s=0.0)
    with budget.hold(60):
        assert budget.used == 60
        with pytest.raises(BudgetFull, match="60 of 100 pixels are being decoded; 50 more do not fit"):
            with budget.hold(50):
                pass
        assert budget.used == 60  # a refused hold takes nothing
        with budget.hold(40):
            assert budget.used == 100
        assert budget.used == 60
    assert budget.used == 0
    with pytest.raises(RuntimeError):
        with budget.hold(100):
            raise RuntimeError("the decoder failed")
    assert budget.used == 0
    with pytest.raises(ValueError, match="more than the whole budget"):
        with budget.hold(101):
            pass


def test_a_waiting_upload_gets_the_pixels_given_back():
    budget = PixelBudget(100, wait_s=10.0)
    got = []

    def second() -> None:
        start = time.perf_counter()
        with budget.hold(70):
            got.append(time.perf_counter() - start)

    with budget.hold(50):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        assert got == []  # 50 + 70 > 100: it waits
    thread.join(timeout=10)
    assert len(got) == 1 and 0.1 < got[0] < 5 and budget.used == 0


def _png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_take_their_pixels_and_get_503_when_the_budget_is_full():
    limits = Limits(max_pixels=1_000_000, max_pixels_in_flight=1_500_000, pixel_wait_s=0.0)
    budget = PixelBudget(limits.max_pixels_in_flight, limits.pixel_wait_s)
    seen = []
    spy = PixelBudget(limits.max_pixels_in_flight, 0.0)
    spy.hold = lambda n: seen.append(n) or budget.hold(n)
    image = decode_upload(_png((1000, 800)), limits, spy, min_side=64)
    assert image.size == (83, 66) and seen == [800_000] and budget.used == 0  # reduced by 12; given back
    with budget.hold(1_000_000):
        with pytest.raises(HTTPException) as refused:
            decode_upload(_png((1000, 800)), limits, budget)
        assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
        assert "try again" in refused.value.detail
        assert decode_upload(_png((500, 500)), limits, budget).size == (500, 500)  # what fits still goes
    with pytest.raises(HTTPException) as damaged:
        decode_upload(_png((1000, 800))[:200], limits, budget)
    assert damaged.value.status_code == 422 and budget.used == 0  # given back after a failed decode
    with pytest.raises(HTTPException) as large:
        decode_upload(_png((1001, 1000)), limits, budget)
    assert large.value.status_code == 413 and "1001 x 1000" in large.value.detail and budget.used == 0
    with pytest.raises(ValueError, match="max_pixels_in_flight"):
        Limits(max_pixels=100, max_pixels_in_flight=99)
