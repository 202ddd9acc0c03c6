"""Triton's own HTTP client, `tritonclient.http`, at its defaults (binary tensor data on),
against the server: health, metadata, readiness per version, inference and explanation."""

import base64

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MODEL


@pytest.fixture(scope="module")
def client(url):
    with httpclient.InferenceServerClient(url.removeprefix("http://")) as c:
        yield c


def image_input(photo: bytes, binary_data: bool = True) -> httpclient.InferInput:
    """The photo as the BYTES input `image`: its base64 text, which JSON can carry too, so
    the same tensor goes out with binary data on or off."""
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([base64.b64encode(photo)], dtype=object), binary_data=binary_data)
    return tensor


def test_health_metadata_and_readiness_per_version(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    for version in metadata["versions"]:
        assert client.is_model_ready(MODEL, version), version
        assert client.get_model_metadata(MODEL, version) == metadata
    assert not client.is_model_ready(MODEL, "99")
    assert not client.is_model_ready("no-such-model")


def test_infer_in_binary_equals_json_and_predict(client, photo, predicted):
    binary = client.infer(MODEL, [image_input(photo)])
    assert binary.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 4 * 1000
    as_json = client.infer(
        MODEL,
        [image_input(photo, binary_data=False)],
        outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)],
    )
    assert "data" in as_json.get_response()["outputs"][0]
    probabilities = binary.as_numpy("probabilities")
    assert probabilities.shape == (1, 1000) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, as_json.as_numpy("probabilities"))

    # The raw file's bytes as the element (binary data only: JSON cannot carry them).
    raw = httpclient.InferInput("image", [1], "BYTES")
    raw.set_data_from_numpy(np.array([photo], dtype=object))
    np.testing.assert_array_equal(client.infer(MODEL, [raw], model_version="1").as_numpy("probabilities"), probabilities)

    top = [p["index"] for p in predicted["predictions"]]
    assert list(np.argsort(-probabilities[0])[: len(top)]) == top
    for p in predicted["predictions"]:
        assert probabilities[0][p["index"]] == pytest.approx(p["score"], abs=1e-6)


def test_explain_through_v2_is_the_map_of_explain(client, photo, explained):
    result = client.infer(MODEL, [image_input(photo)], parameters={"explain": True, "method": "scorecam"})
    saliency = result.as_numpy("saliency")
    assert saliency.shape == (1, 224, 224) and saliency.dtype == np.float32
    document = explained["explanations"][0]
    assert result.as_numpy("explained_class").tolist() == [document["target"]["index"]]
    expected = np.array(document["saliency"]["data"], dtype=np.float32).reshape(224, 224)
    np.testing.assert_allclose(saliency[0], expected, atol=1e-6)


def test_unknown_parameter_is_refused_naming_the_accepted(client, photo):
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [image_input(photo)], parameters={"explian": True})
    assert "explian" in str(refused.value) and "explain, binary_data_output" in str(refused.value)
