"""Shared fixtures of the third-party client tests (scripts/ci/client_test.sh).

The server under test is at $SCORECAM_URL. The reference answers come from the server's
own HTTP API (/predict, /explain) through the standard library, so every client is checked
against the same service through another door, never against numbers written here.
"""

import json
import os
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet-lite0"


@pytest.fixture(scope="session")
def url() -> str:
    return os.environ["SCORECAM_URL"]


@pytest.fixture(scope="session")
def photo() -> bytes:
    return (ROOT / "samples" / "chelsea.png").read_bytes()


def post_image(url: str, path: str, photo: bytes) -> dict:
    """POSTs the photo as a raw body to one of the server's own routes; its JSON answer."""
    request = urllib.request.Request(url + path, data=photo, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="session")
def predicted(url, photo) -> dict:
    """/predict's answer for the photo (all classes' order and scores)."""
    return post_image(url, "/predict?top_k=5", photo)


@pytest.fixture(scope="session")
def explained(url, photo) -> dict:
    """/explain's JSON answer for the photo, Score-CAM at the model's input size."""
    return post_image(url, "/explain?format=json&resolution=model&method=scorecam", photo)
