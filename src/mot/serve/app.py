"""The HTTP API of ``mot serve`` (FastAPI on uvicorn).

=================================  ==============================================================
``GET /``                          a page to try the model (no CDN, no build step)
``GET /health``                    the model, its setting and tasks, the queue
``GET /metrics``                   Prometheus text (requests, seconds, tokens/s by modality, queue)
``GET /v1/models``                 the served model, as the OpenAI API lists models
``POST /v1/completions``           text completion, OpenAI-style; ``"stream": true`` sends
                                   server-sent events
``POST /v1/images``                a caption -> ``image/png``
``POST /v1/captions``              an image file (PNG, JPEG) as the body -> ``{"text": ...}``
``POST /v1/speech``                a text -> ``audio/wav`` (runs with speech)
``POST /v1/transcriptions``        a WAV file as the body -> ``{"text": ...}`` (runs with speech)
=================================  ==============================================================

Every error is JSON, ``{"error": {"message", "type", "code"}}``: 400 bad input, 401 a missing or
wrong bearer token, 404 another model, 413 a body over the limit, 422 a field of the wrong type or
range or an unknown field, 429 a full queue, 500 a failure of the server's own, 503 shutting down,
504 out of time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Optional

from fastapi import Depends, FastAPI, Query, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..config import ConfigError
from ..generate.logits import Sampling
from ..generate.transfusion import ImageSampling
from .middleware import BodyLimit, UnexpectedErrors
from .limits import ServeLimits
from .metrics import Metrics
from .scheduler import Job, Scheduler, ServeError
from .schemas import Body, CompletionBody, ImageBody, SpeechBody
from .served_model import ServedModel


#: the page loads nothing from elsewhere, and says so to the browser
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; connect-src 'self' blob:; img-src 'self' blob:; "
                                           "media-src blob:; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                "Cache-Control": "no-cache"}


class Waiter:
    """A job's events, carried from the scheduler's thread to the event loop."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()

    def notify(self, kind: str, value: object) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


def create_app(model: ServedModel, limits: ServeLimits = ServeLimits(), token: Optional[str] = None,
               padded_towers: bool = False) -> FastAPI:
    """The server of ``model``; with ``token``, every ``/v1`` route and ``/metrics`` need
    ``Authorization: Bearer <token>``. ``padded_towers``: the scheduler's baseline way of running
    towers (see :mod:`.scheduler`)."""
    metrics = Metrics()
    scheduler = Scheduler(model, metrics, limits.max_batch, limits.max_queue, padded_towers)

    @asynccontextmanager
    async def lifespan(_app):
        scheduler.start()
        yield
        await run_in_threadpool(scheduler.stop, limits.shutdown_seconds)

    app = FastAPI(title=f"mot serve: {model.name}", lifespan=lifespan)
    app.state.scheduler, app.state.metrics, app.state.model = scheduler, metrics, model
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(UnexpectedErrors, metrics=metrics)
    _add_error_handlers(app)

    def authorized(request: HTTPRequest) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):  # constant time
            raise ServeError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                             "authentication_error")

    def named(body: Body) -> None:
        if body.model is not None and body.model != model.name:
            raise ServeError(404, f"model {body.model!r} is not served here; this server serves {model.name!r}",
                             "not_found")

    def job(work, task: str, waiter: Waiter) -> Job:
        length = model.prompt_tokens(work)
        if length > limits.max_prompt_tokens:
            raise ServeError(400, f"the prompt has {length} tokens, more than this server's limit of "
                                  f"{limits.max_prompt_tokens}")
        return Job(work, task, waiter.notify, time.monotonic() + limits.timeout_seconds)

    def new_tokens(name: str, value: int) -> None:
        if value > limits.max_new_tokens:
            raise ServeError(400, f"{name}={value}: more than this server's limit of {limits.max_new_tokens}")

    async def answer(request: HTTPRequest, job: Job, waiter: Waiter) -> object:
        """Submit ``job`` and wait for its result; a client that goes away cancels it."""
        scheduler.submit(job)
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(waiter.events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        metrics.finished(job.task, "cancelled", time.monotonic() - job.submitted)
                        return None
                    continue
                if kind == "done":
                    return value
                if kind == "error":
                    raise value
        finally:
            job.cancel()  # nothing, once the job is done

    def ok(job: Job, response):
        """``response``, counted as the answer to ``job`` (each request is counted once, when answered)."""
        metrics.finished(job.task, "ok", time.monotonic() - job.submitted)
        return response

    # ---- pages and status ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("mot.serve").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict:
        return dict(status="ok", model=model.name, setting=model.setting, tasks=list(model.tasks),
                    auth=token is not None, limits=asdict(limits), **scheduler.load)

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorized)])
    async def prometheus() -> str:
        return metrics.prometheus()

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict:
        return dict(object="list", data=[dict(id=model.name, object="model", owned_by="mot")])

    # ---- tasks -----------------------------------------------------------------------------------

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionBody, request: HTTPRequest):
        model.require("completions")
        named(body)
        new_tokens("max_tokens", body.max_tokens)
        sampling = Sampling(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                            repetition_penalty=body.repetition_penalty, seed=body.seed)
        waiter = Waiter()
        work = job(model.completion(body.prompt, body.max_tokens, sampling), "completions", waiter)
        created, ident = int(time.time()), f"cmpl-{id(work):x}"
        if body.stream:
            work.stream = True
            scheduler.submit(work)  # a full queue answers 429 before the stream starts
            return StreamingResponse(_stream(model, metrics, work, waiter, ident, created),
                                     media_type="text/event-stream")
        live = await answer(request, work, waiter)
        if live is None:
            return Response(status_code=499)
        prompt_tokens, completion_tokens = len(work.work.prompt), live.steps
        return ok(work, dict(id=ident, object="text_completion", created=created, model=model.name,
                             choices=[dict(index=0, text=model.text(live.tokens), finish_reason=_finish_reason(live))],
                             usage=dict(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                        total_tokens=prompt_tokens + completion_tokens)))

    @app.post("/v1/images", dependencies=[Depends(authorized)])
    async def images(body: ImageBody, request: HTTPRequest):
        model.require("images")
        named(body)
        sampling = Sampling(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed)
        diffusion = (ImageSampling(steps=body.steps, method=body.method, cfg_scale=body.guidance, seed=body.seed)
                     if model.transfusion else None)
        waiter = Waiter()
        work = job(model.image(body.prompt, sampling, body.guidance, diffusion), "images", waiter)
        result = await answer(request, work, waiter)
        if result is None:
            return Response(status_code=499)
        image = result if isinstance(result, bytes) else await run_in_threadpool(model.image_png, result)
        return ok(work, Response(image, media_type="image/png"))

    @app.post("/v1/captions", dependencies=[Depends(authorized)])
    async def captions(request: HTTPRequest, max_tokens: int = Query(40, ge=1), temperature: float = Query(0.0, ge=0),
                       seed: int = Query(0, ge=0, lt=2**63)):
        model.require("captions")
        new_tokens("max_tokens", max_tokens)
        upload = await _upload(request)
        sampling = Sampling(temperature=temperature, seed=seed)
        waiter = Waiter()
        work = job(await run_in_threadpool(model.caption, upload, max_tokens, sampling), "captions", waiter)
        live = await answer(request, work, waiter)
        return Response(status_code=499) if live is None else ok(work, dict(text=model.text(live.tokens)))

    @app.post("/v1/speech", dependencies=[Depends(authorized)])
    async def speech(body: SpeechBody, request: HTTPRequest):
        model.require("speech")
        named(body)
        new_tokens("max_units", body.max_units)
        sampling = Sampling(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed)
        waiter = Waiter()
        work = job(model.speech(body.prompt, body.max_units, sampling), "speech", waiter)
        live = await answer(request, work, waiter)
        if live is None:
            return Response(status_code=499)
        if body.format == "units":  # for a client with its own vocoder; the server's takes seconds per utterance
            return ok(work, dict(units=model.speech_units(live, body.max_units).tolist(),
                                 finish_reason=_finish_reason(live)))
        audio = await run_in_threadpool(model.speech_wav, live, body.seed, body.max_units)
        return ok(work, Response(audio, media_type="audio/wav"))

    @app.post("/v1/transcriptions", dependencies=[Depends(authorized)])
    async def transcriptions(request: HTTPRequest, max_tokens: int = Query(60, ge=1),
                             temperature: float = Query(0.0, ge=0), seed: int = Query(0, ge=0, lt=2**63)):
        model.require("transcriptions")
        new_tokens("max_tokens", max_tokens)
        upload = await _upload(request)
        sampling = Sampling(temperature=temperature, seed=seed)
        waiter = Waiter()
        work = job(await run_in_threadpool(model.transcription, upload, max_tokens, sampling), "transcriptions",
                   waiter)
        live = await answer(request, work, waiter)
        return Response(status_code=499) if live is None else ok(work, dict(text=model.text(live.tokens)))

    return app


async def _upload(request: HTTPRequest) -> bytes:
    upload = await request.body()
    if not upload:
        raise ServeError(400, "the request body is empty: send the file's bytes as the body")
    return upload


def _finish_reason(live) -> str:
    return "stop" if live.finished else "length"


async def _stream(model: ServedModel, metrics: Metrics, job: Job, waiter: Waiter, ident: str, created: int):
    """Server-sent events of a submitted completion: a chunk per piece of new text, the finish
    reason, ``[DONE]``."""

    def event(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    def chunk(text: str, finish_reason: Optional[str] = None) -> str:
        return event(dict(id=ident, object="text_completion", created=created, model=model.name,
                          choices=[dict(index=0, text=text, finish_reason=finish_reason)]))

    eos, tokens, sent, outcome = model.decoder.grammar.eos, [], "", "cancelled"
    try:
        while True:
            kind, value = await waiter.events.get()
            if kind == "token":
                if value != eos:
                    tokens.append(value)
                text = model.text(tokens)
                if len(text) > len(sent) and not text.endswith("\ufffd"):  # a whole character more
                    yield chunk(text[len(sent):])
                    sent = text
            elif kind == "done":
                text = model.text(value.tokens)
                outcome = "ok"
                yield chunk(text[len(sent):], _finish_reason(value))
                yield "data: [DONE]\n\n"
                return
            else:
                outcome = str(value.status)
                yield event(_error_body(value))
                yield "data: [DONE]\n\n"
                return
    finally:
        job.cancel()  # a client that went away stops the generator here
        metrics.finished(job.task, outcome, time.monotonic() - job.submitted)


def _error_body(error: ServeError) -> dict:
    return dict(error=dict(message=error.reason, type=error.kind, code=error.status))


def _add_error_handlers(app: FastAPI) -> None:
    def reply(error: ServeError, metrics: Metrics, path: str) -> JSONResponse:
        metrics.failed(path, error.status)
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(_error_body(error), status_code=error.status, headers=headers)

    @app.exception_handler(ServeError)
    async def serve_error(request: HTTPRequest, error: ServeError):
        return reply(error, request.app.state.metrics, request.url.path)

    @app.exception_handler(ConfigError)  # a generation setting or input the pipelines refuse
    async def bad_setting(request: HTTPRequest, error: ConfigError):
        return reply(ServeError(400, str(error)), request.app.state.metrics, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HTTPRequest, error: RequestValidationError):
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return reply(ServeError(400, "the body is not valid JSON"), request.app.state.metrics, request.url.path)
        if any(tuple(p.get("loc", ())) == ("body",) for p in problems):
            return reply(ServeError(400, "the body must be a JSON object (Content-Type: application/json)"),
                         request.app.state.metrics, request.url.path)
        described = "; ".join(f"{'.'.join(str(part) for part in p['loc'][1:]) or 'body'}: {p['msg']}"
                              for p in problems)
        return reply(ServeError(422, described), request.app.state.metrics, request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: HTTPRequest, error: HTTPException):
        return reply(ServeError(error.status_code, str(error.detail), "invalid_request_error"),
                     request.app.state.metrics, request.url.path)
