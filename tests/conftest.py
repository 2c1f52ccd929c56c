"""Shared fixtures: a Prefect test harness per session, and lakes on a local folder and on a
real S3 API (moto's standalone server on loopback)."""

from __future__ import annotations

import os
import tempfile
import uuid

# Before prefect is imported anywhere: a private Prefect home and result store per session,
# and no telemetry (there is no internet here).
_PREFECT_HOME = tempfile.mkdtemp(prefix="track-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "results")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# Events are readable (and triggers fire) half a second after they arrive, not five.
os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"] = "0.5"
os.environ.pop("TRACK_LAKE", None)
# Storage outages in the tests are deliberate: retry them quickly.
os.environ["TRACK_RETRY_DELAYS"] = "0.2,0.2,0.2"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (flows run for real against it)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1, with the standard AWS variables pointing at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_ALLOW_HTTP="true",
    )
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", "s3"])
def lake_url(request, tmp_path) -> str:
    """An empty lake: a local folder, or a fresh bucket on the S3 API."""
    if request.param == "local":
        return str(tmp_path / "lake")
    request.getfixturevalue("s3_endpoint")
    import s3fs

    bucket = f"track-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(bucket)
    return f"s3://{bucket}/lake"
