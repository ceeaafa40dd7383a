import contextlib
import threading
import time
from collections.abc import Callable

import pytest


@contextlib.contextmanager
def _serving(app, port: int):
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serving() -> Callable:
    """``serving(app, port)``: a context manager serving ``app`` with uvicorn on 127.0.0.1:``port`` in a
    thread until the block ends."""
    return _serving
