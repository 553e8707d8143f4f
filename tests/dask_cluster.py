"""One Dask LocalCluster (two single-threaded worker processes on 127.0.0.1) for every
cluster test of a pytest process: started by the first test that asks for it, closed when the
session ends. A test module's fixture: ``client = pytest.fixture(dask_client)``."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest

_SHARED: dict[str, Any] = {}


def dask_client(request: pytest.FixtureRequest) -> Any:
    """The shared ``distributed.Client`` (skips the test without Dask)."""
    pytest.importorskip("distributed")
    if "client" not in _SHARED:
        from xai_widgets.distributed import local_client

        stack = ExitStack()
        _SHARED["client"] = stack.enter_context(local_client(workers=2))
        request.config.add_cleanup(stack.close)
    return _SHARED["client"]
