"""``mot serve RUN`` as a user starts it: a process on a loopback port that answers, and stops
cleanly on SIGTERM."""

import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mot_serve_answers_and_stops_on_sigterm(chameleon_run):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mot", "serve", str(chameleon_run), "--port", str(port),
                               "--token", "t0k", "--max-batch", "4"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(f"{url}/health", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health["auth"] is True and health["limits"]["max_batch"] == 4
        answer = httpx.post(f"{url}/v1/completions", json=dict(prompt="a red circle", max_tokens=3),
                            headers={"Authorization": "Bearer t0k"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["object"] == "text_completion"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert f"on http://127.0.0.1:{port}" in output
