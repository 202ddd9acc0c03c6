"""KServe's own client, `kserve.InferenceRESTClient`, against the server: the V1 protocol
(liveness at `GET /`, model readiness, predict, explain) and the Open Inference Protocol v2
with KServe's request types (binary tensor data)."""

import asyncio
import base64

import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from conftest import MODEL


def run(protocol: str, call):
    """Runs `call(client)` with a fresh client of the given protocol."""

    async def go():
        client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=120))
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(go())


def test_v1_health(url):
    assert run("v1", lambda c: c.is_server_live(url)) is True
    assert run("v1", lambda c: c.is_model_ready(url, MODEL)) is True


def test_v1_predict_is_predict(url, photo, predicted):
    instance = {"image": {"b64": base64.b64encode(photo).decode()}}
    answer = run("v1", lambda c: c.infer(url, {"instances": [instance], "parameters": {"top_k": 5}}, model_name=MODEL))
    (prediction,) = answer["predictions"]
    assert prediction["predictions"] == predicted["predictions"]


def test_v1_explain_is_explain(url, photo, explained):
    body = {
        "instances": [base64.b64encode(photo).decode()],
        "parameters": {"method": "scorecam", "resolution": "model"},
    }
    answer = run("v1", lambda c: c.explain(url, model_name=MODEL, data=body))
    (explanation,) = answer["explanations"]
    assert explanation["explanations"][0]["target"] == explained["explanations"][0]["target"]
    assert explanation["explanations"][0]["saliency"] == explained["explanations"][0]["saliency"]


def test_v2_infer_with_binary_data_is_predict(url, photo, predicted):
    assert run("v2", lambda c: c.is_server_live(url)) is True
    assert run("v2", lambda c: c.is_model_ready(url, MODEL)) is True
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([photo], dtype=object), binary_data=True)
    request = InferRequest(model_name=MODEL, infer_inputs=[tensor], parameters={"binary_data_output": True})
    response = run("v2", lambda c: c.infer(url, request, model_name=MODEL))
    (output,) = response.outputs
    assert output.name == "probabilities"
    probabilities = output.as_numpy()
    for p in predicted["predictions"]:
        assert probabilities[0][p["index"]] == pytest.approx(p["score"], abs=1e-6)
    assert int(np.argmax(probabilities[0])) == predicted["predictions"][0]["index"]
