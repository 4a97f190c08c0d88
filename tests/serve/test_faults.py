"""Bad requests, bad clients and too many requests: each gets the right status and a JSON error, and
the server goes on serving afterwards."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mot.config import ConfigError
from mot.serve.limits import ServeLimits
from mot.serve.metrics import Metrics
from mot.serve.scheduler import Scheduler, ServeError
from mot.serve.server import BackgroundServer

TOKEN = "s3cret-token"
OK = dict(prompt="a red circle", max_tokens=4, seed=1)


@pytest.fixture(scope="module")
def server(served):
    limits = ServeLimits(max_body_bytes=4096, max_prompt_tokens=40, max_new_tokens=100)
    with BackgroundServer(served, limits, token=TOKEN) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def error_of(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == status and error["message"]
    return error["message"]


def still_serving(client):
    assert client.post("/v1/completions", json=OK).status_code == 200


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"prompt": "a", "max_tokens": "4"}', 422, "max_tokens: Input should be a valid integer"),
    (b'{"prompt": 7}', 422, "prompt: Input should be a valid string"),
    (b'{"prompt": "a", "temperature": -1}', 422, "temperature: Input should be greater than or equal to 0"),
    (b'{"prompt": "a", "colour": "red"}', 422, "colour: Extra inputs are not permitted"),
    (b'{"prompt": "a", "model": "gpt-9"}', 404, "model 'gpt-9' is not served here"),
    (b'{"prompt": "a", "max_tokens": 101}', 400, "max_tokens=101: more than this server's limit of 100"),
    (b'{"prompt": "' + b"circle " * 60 + b'"}', 400, "more than this server's limit of 40"),
    (b'{}', 422, "prompt: Field required"),
])
def test_bad_bodies_are_named(client, body, status, message):
    response = client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert message in error_of(response, status)
    still_serving(client)


def test_a_task_the_model_lacks_and_unusable_files(client):
    assert "does not do speech" in error_of(client.post("/v1/speech", json=dict(prompt="hi")), 400)
    assert "does not do transcriptions" in error_of(client.post("/v1/transcriptions", content=b"RIFF"), 400)
    assert "not a readable image" in error_of(client.post("/v1/captions", content=b"\x89PNG garbage"), 400)
    assert "body is empty" in error_of(client.post("/v1/captions", content=b""), 400)
    assert "greater than or equal to 1" in error_of(client.post("/v1/captions?max_tokens=0", content=b"x"), 422)
    still_serving(client)


def test_oversized_bodies_are_refused_declared_or_streamed(client):
    assert "limit of 4096 bytes" in error_of(client.post("/v1/captions", content=b"x" * 5000), 413)

    def chunks():  # no Content-Length: the body is cut off once it passes the limit
        for _ in range(10):
            yield b"x" * 1000

    assert "limit of 4096 bytes" in error_of(client.post("/v1/captions", content=chunks()), 413)
    still_serving(client)


def test_the_bearer_token_is_required(server, client):
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        response = anonymous.post("/v1/completions", json=OK)
        assert "bearer token" in error_of(response, 401) and response.headers["www-authenticate"] == "Bearer"
        assert error_of(anonymous.get("/metrics"), 401)
        wrong = anonymous.post("/v1/completions", json=OK, headers={"Authorization": f"Bearer {TOKEN}x"})
        error_of(wrong, 401)
        assert anonymous.get("/health").json()["auth"] is True  # health and the page stay open
        assert anonymous.get("/").status_code == 200
    still_serving(client)


def test_a_client_that_leaves_mid_stream_frees_its_place(server, client):
    scheduler = server.app.state.scheduler
    body = dict(prompt="a red circle", max_tokens=100, seed=1, temperature=1.0, stream=True,
                repetition_penalty=1.0)
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # one piece of text, then the client goes away
    deadline = time.monotonic() + 20
    while (scheduler.running or len(scheduler.batch)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scheduler.running and len(scheduler.batch) == 0 and scheduler.batch.cache is None
    assert 'task="completions",status="cancelled"' in client.get("/metrics").text
    still_serving(client)


def test_a_flood_above_the_queue_gets_429_and_the_rest_is_served(served):
    limits = ServeLimits(max_batch=1, max_queue=2, max_new_tokens=100)
    with BackgroundServer(served, limits) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        body = dict(prompt="a red circle", max_tokens=100, seed=1, temperature=1.0)
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda _: client.post("/v1/completions", json=body), range(12)))
        statuses = sorted(r.status_code for r in responses)
        refused = [r for r in responses if r.status_code == 429]
        assert refused and set(statuses) == {200, 429} and statuses.count(200) >= 3  # 1 running + 2 waiting
        assert "queue is full" in error_of(refused[0], 429)
        texts = {r.json()["choices"][0]["text"] for r in responses if r.status_code == 200}
        assert len(texts) == 1  # every served one is the same request's same answer
        assert client.post("/v1/completions", json=body).status_code == 200


def test_a_request_past_its_timeout_gets_504(served):
    with BackgroundServer(served, ServeLimits(timeout_seconds=0.001)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        assert "time" in error_of(client.post("/v1/completions", json=OK), 504)


def test_shutdown_finishes_running_work_then_refuses(served):
    answers = []
    server = BackgroundServer(served, ServeLimits(max_batch=1))
    with server:
        client = httpx.Client(base_url=server.url, timeout=60)
        scheduler = server.app.state.scheduler
        body = dict(prompt="a red circle", max_tokens=100, seed=1, temperature=1.0)
        sender = threading.Thread(target=lambda: answers.append(client.post("/v1/completions", json=body)))
        sender.start()
        while not scheduler.running:
            time.sleep(0.01)
    sender.join(60)
    assert answers and answers[0].status_code == 200  # in flight when shutdown began: finished
    assert scheduler.stopping and not scheduler.thread.is_alive()
    with pytest.raises(ServeError, match="shutting down") as refused:
        scheduler.submit(None)
    assert refused.value.status == 503
    with pytest.raises(httpx.ConnectError):
        client.get("/health")


def test_an_unexpected_failure_is_a_json_500_and_the_connection_stays(server, client, monkeypatch):
    model = server.app.state.model

    def broken(*args):
        raise RuntimeError("the PNG writer broke")

    monkeypatch.setattr(model, "image_png", broken)
    before = client.get("/metrics").text
    assert "the PNG writer broke" in error_of(client.post("/v1/images", json=dict(prompt="a red circle")), 500)
    assert client.get("/health").status_code == 200  # the same keep-alive connection
    metrics = client.get("/metrics").text
    assert 'mot_requests_total{task="images",status="500"} 1' in metrics
    assert 'task="images",status="ok"' not in metrics and 'task="images",status="ok"' not in before  # once


def test_limits_are_checked():
    with pytest.raises(ConfigError, match="max_batch=0: must be an integer >= 1"):
        ServeLimits(max_batch=0)
    with pytest.raises(ConfigError, match="timeout_seconds=0: must be a number > 0"):
        ServeLimits(timeout_seconds=0)


def test_the_worker_survives_a_failing_model(served, monkeypatch):
    from mot.generate.logits import Sampling
    from mot.serve.scheduler import Job

    scheduler = Scheduler(served, Metrics(), max_batch=2).start()
    events = []

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    def submit_and_wait(until):
        job = Job(served.completion("a red circle", 4, Sampling()), "completions",
                  lambda kind, value: events.append((kind, value)), time.monotonic() + 30)
        scheduler.submit(job)
        deadline = time.monotonic() + 20
        while not until() and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(scheduler.batch, "step", broken)
    submit_and_wait(lambda: events)
    assert events[0][0] == "error" and events[0][1].status == 500 and "boom" in events[0][1].reason
    submit_and_wait(lambda: events[-1][0] == "done")
    assert events[-1][0] == "done"  # a fresh batch serves the next request
    scheduler.stop(5)
