import pytest


def pytest_configure(config):
    # Registered here as well as in pyproject.toml, for runs from a copy of tests/ (CI's wheel
    # stage) where pyproject.toml is not beside them.
    config.addinivalue_line("markers", "gpu: needs a CUDA device and CuPy (skipped otherwise)")
    config.addinivalue_line("markers", "slow: long-running")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` with a clear reason where no CUDA device (or no CuPy) is present."""
    reason = None
    try:
        import cupy  # noqa: F401

        try:
            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001 -- any CUDA runtime error means no usable GPU
            n, reason = 0, f"no usable CUDA device ({type(e).__name__}: {e})"
        if n == 0 and reason is None:
            reason = "no CUDA device"
    except ImportError:
        reason = "CuPy is not installed (pip install '.[cuda]')"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test skipped: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
