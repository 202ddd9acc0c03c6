"""A client generated from openapi.yaml by openapi-python-client (into target/ by
scripts/ci/client_test.sh, never committed), used as generated: the contract must be one a
generator turns into a working client."""

import base64
import io
import os
import sys
import urllib.request

import pytest

sys.path.insert(0, os.environ["SCORECAM_GENERATED_CLIENT"])

from scorecam_client import Client  # noqa: E402
from scorecam_client.api.default import explain, predict, v_1_explain, v_2_infer  # noqa: E402
from scorecam_client.models import (  # noqa: E402
    ExplainDocument,
    ExplainFormat,
    PredictDocument,
    StreamedImage,
    V1ExplainRequest,
    V2InferJsonBody,
)
from scorecam_client.types import File  # noqa: E402

from conftest import MODEL  # noqa: E402


@pytest.fixture(scope="module")
def client(url):
    with Client(base_url=url, timeout=120) as c:
        yield c


def upload(photo: bytes) -> File:
    return File(payload=io.BytesIO(photo), file_name="chelsea.png", mime_type="image/png")


def test_predict_with_only_the_required_arguments(client, photo, predicted):
    answer = predict.sync_detailed(client=client, body=upload(photo))
    assert answer.status_code == 200
    document = answer.parsed
    assert isinstance(document, PredictDocument)
    assert [(p.index, p.label, p.score) for p in document.predictions] == [
        (p["index"], p["label"], p["score"]) for p in predicted["predictions"]
    ]


def test_explain_as_json(client, photo, explained):
    answer = explain.sync_detailed(client=client, body=upload(photo), format_=ExplainFormat.JSON)
    assert answer.status_code == 200, answer.content[:300]
    document = answer.parsed
    assert isinstance(document, ExplainDocument)
    target = document.explanations[0].target
    assert (target.index, target.label) == (
        explained["explanations"][0]["target"]["index"],
        explained["explanations"][0]["target"]["label"],
    )
    assert target.index == document.predictions[0].index
    assert document.stats.forward_passes >= 0


def test_v2_infer(client, photo, predicted):
    body = V2InferJsonBody.from_dict(
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(photo).decode()]}]}
    )
    answer = v_2_infer.sync_detailed(MODEL, client=client, body=body)
    assert answer.status_code == 200, answer.content[:300]
    (output,) = answer.parsed.outputs
    assert output.name == "probabilities"
    for p in predicted["predictions"]:
        assert output.data[p["index"]] == pytest.approx(p["score"], abs=1e-6)


def test_png_through_v1_explain(client, url, photo):
    """The PNG overlay, typed: KServe V1's `:explain` with `format: png` carries it in base64
    (a generated client parses one content type per status, so `/explain`'s raw PNG and its
    JSON cannot both be typed there); it is the PNG `/explain` answers."""
    body = V1ExplainRequest.from_dict(
        {"instances": [{"b64": base64.b64encode(photo).decode()}], "parameters": {"format": "png"}}
    )
    answer = v_1_explain.sync_detailed(MODEL, client=client, body=body)
    assert answer.status_code == 200, answer.content[:300]
    (image,) = answer.parsed.explanations
    assert isinstance(image, StreamedImage)
    png = base64.b64decode(image.image.base64)
    request = urllib.request.Request(url + "/explain", data=photo, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert png == response.read()
    assert image.target.index == int(response.headers["X-Scorecam-Target-Index"])
