"""Serving throughput and latency of ``mot serve``: one request at a time, continuous batching with
each tower run once per step on all its tokens ("tower-batched"), and the same batching with every
tower's tokens padded to the largest tower's and the towers run as one batched matmul ("padded",
the paper's section 6.3 alternative), side by side in one process.

The run's :class:`ServedModel` is built once; each strategy gets its own
:class:`~mot.serve.server.BackgroundServer` on a free loopback port, started after the previous
one has shut down, and one warm-up request per task and ``--warmup-rounds`` untimed passes of the
whole workload before it is timed, so that no strategy pays for a cold process (first shapes,
the allocator) that the others do not. The workload is a fixed,
seeded list of mixed requests of every task the run does (text completions, text -> image,
image -> text captions of PNGs made up front, and with speech text -> speech and speech -> text
of WAVs made up front), each with its own seed. For each ``--concurrency`` C, C closed-loop
client threads (an ``httpx.Client`` each) take the next request of the first ``--requests`` of
that list as soon as their previous one is answered; past ``--max-seconds`` no new request is
sent and the ones not sent are reported.

Reported per strategy and concurrency: requests answered 2xx and failed (any other status or a
client error; the target is none), requests per second, generated tokens per second (the server's
``mot_generated_tokens_total`` before and after, every modality, so it counts what the server
really decoded), the throughput relative to one-at-a-time at the same concurrency, and the p50 and
p99 client latency of each task. Every request is the same at every strategy and concurrency, so
every answer must be the same: the table counts answers that differ from the first strategy's
(padded towers round floats differently, which may flip a rare near-tie; the others should
differ in none).

The clients run in a process of their own (so they do not hold the server's GIL); on a machine
with few cores they still take some of its CPU, so compare ratios, not absolute numbers.

Text -> speech answers with unit ids by default (``--speech-format units``): the server's vocoder
(Griffin-Lim) takes about 2 s of CPU per 100 units on 2 cores, outside the scheduler, and with
``--speech-format wav`` every strategy's throughput is that of the vocoder.

    python benchmarks/serving.py RUN_DIR
    python benchmarks/serving.py RUN_DIR --concurrency 1,8 --requests 16 --json serving.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import httpx
import torch

from mot.generate.logits import Sampling
from mot.generate.transfusion import ImageSampling
from mot.serve.limits import ServeLimits
from mot.serve.served_model import ServedModel, png, wav
from mot.serve.server import BackgroundServer, serving_threads

from machine import machine_info  # benchmarks/machine.py: run as a script, this folder is on the path

STRATEGIES = ("one-at-a-time", "tower-batched", "padded")
PATHS = {"completions": "/v1/completions", "images": "/v1/images", "captions": "/v1/captions",
         "speech": "/v1/speech", "transcriptions": "/v1/transcriptions"}
#: ShapeScenes-style captions, the kind of text the small runs are trained on
PROMPTS = ("a red circle above a blue square", "a green triangle left of a yellow circle",
           "two blue squares below a red triangle", "a small yellow square right of a green circle",
           "a purple circle", "a large orange triangle above a small blue circle",
           "three red circles in a row", "a blue square inside a green circle")
UPLOADS = 4  # PNGs and WAVs made up front; requests reuse them with different seeds


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a trained run (its newest checkpoint is served)")
    p.add_argument("--concurrency", default="1,4,8", help="comma list of closed-loop client counts")
    p.add_argument("--requests", type=int, default=32, help="requests sent at each concurrency")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="per strategy and concurrency: no new request is sent past this")
    p.add_argument("--max-batch", type=int, default=8, help="the batched strategies' max_batch")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma list from {list(STRATEGIES)}")
    p.add_argument("--guidance", type=float, default=1.0, help="text -> image guidance scale (1: none)")
    p.add_argument("--max-tokens", type=int, default=32, help="new text tokens of completions, captions, "
                                                              "transcriptions")
    p.add_argument("--max-units", type=int, default=100, help="speech units of text -> speech")
    p.add_argument("--speech-format", choices=["units", "wav"], default="units",
                   help="what text -> speech answers with (wav: the vocoder's time dominates)")
    p.add_argument("--image-steps", type=int, default=50, help="denoising steps (Transfusion runs only)")
    p.add_argument("--seed", type=int, default=0, help="the workload's seed")
    p.add_argument("--warmup-rounds", type=int, default=1,
                   help="untimed passes of the whole workload per strategy before timing (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of the server (default: mot serve's, every core but one)")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args(argv)
    args.concurrency_list = [int(c) for c in args.concurrency.split(",")]
    args.strategy_list = args.strategies.split(",")
    unknown = [s for s in args.strategy_list if s not in STRATEGIES]
    if unknown or min(args.concurrency_list) < 1 or args.requests < 1:
        p.error(f"strategies must come from {list(STRATEGIES)} (got {unknown}), concurrency and requests >= 1")
    return args


# ---- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request of the workload: a JSON body, or an upload with query parameters."""

    index: int
    task: str
    body: Optional[dict] = None
    upload: Optional[bytes] = None
    params: Optional[dict] = None

    def send(self, client: httpx.Client) -> httpx.Response:
        if self.upload is None:
            return client.post(PATHS[self.task], json=self.body)
        kind = "image/png" if self.task == "captions" else "audio/wav"
        return client.post(PATHS[self.task], content=self.upload, params=self.params,
                           headers={"Content-Type": kind})


def uploads(model: ServedModel, args) -> Tuple[List[bytes], List[bytes]]:
    """PNGs to caption and WAVs to transcribe, drawn by the run's own pipeline (outside timing)."""
    prompts = list(PROMPTS[:UPLOADS])
    if model.transfusion:
        sampling = ImageSampling(steps=args.image_steps, cfg_scale=args.guidance, seed=args.seed)
        images = model.pipeline.text_to_image(prompts, sampling)
    else:
        images = model.pipeline.text_to_image(prompts, Sampling(temperature=1.0, seed=args.seed), args.guidance)
    pngs = [png(image) for image in images]
    wavs = []
    if "transcriptions" in model.tasks:
        units = model.pipeline.text_to_speech(prompts, Sampling(temperature=1.0, seed=args.seed), args.max_units)
        wavs = [wav(model.pipeline.speech_audio(u, seed=args.seed)) for u in units]
    return pngs, wavs


def make_call(model: ServedModel, args, index: int, task: str, seed: int, pngs, wavs) -> Call:
    prompt = PROMPTS[seed % len(PROMPTS)]
    if task == "completions":
        return Call(index, task, dict(prompt=prompt, max_tokens=args.max_tokens, temperature=1.0, seed=seed))
    if task == "images":
        body = dict(prompt=prompt, temperature=1.0, guidance=args.guidance, seed=seed)
        return Call(index, task, dict(body, steps=args.image_steps) if model.transfusion else body)
    if task == "speech":
        return Call(index, task, dict(prompt=prompt, max_units=args.max_units, temperature=1.0, seed=seed,
                                      format=args.speech_format))
    files = pngs if task == "captions" else wavs
    return Call(index, task, upload=files[seed % len(files)],
                params=dict(max_tokens=args.max_tokens, temperature=1.0, seed=seed))


def workload(model: ServedModel, args, pngs, wavs) -> List[Call]:
    """``--requests`` calls, the tasks in equal shares in a seeded order, each with its own seed."""
    rng = random.Random(args.seed)
    tasks = [model.tasks[i % len(model.tasks)] for i in range(args.requests)]
    rng.shuffle(tasks)
    return [make_call(model, args, i, task, rng.randrange(2**31), pngs, wavs) for i, task in enumerate(tasks)]


# ---- running it --------------------------------------------------------------------------------


@dataclass
class Answer:
    index: int
    task: str
    status: str  # the HTTP status, or the client's exception
    seconds: float
    output: Optional[str] = None  # what must be equal at every strategy (a digest for bytes)

    @property
    def ok(self) -> bool:
        return self.status.startswith("2")


def output_of(task: str, response: httpx.Response) -> str:
    """The part of an answer that depends on the model only (a completion's id and time do not)."""
    if task in ("images", "speech"):
        return hashlib.sha256(response.content).hexdigest()
    if task == "completions":
        body = response.json()
        return json.dumps([body["choices"][0]["text"], body["usage"]["completion_tokens"]])
    return response.json()["text"]


def call_once(client: httpx.Client, call: Call) -> Answer:
    start = time.perf_counter()
    try:
        response = call.send(client)
        seconds = time.perf_counter() - start
        ok = 200 <= response.status_code < 300
        return Answer(call.index, call.task, str(response.status_code), seconds,
                      output_of(call.task, response) if ok else response.text[:200])
    except Exception as error:  # noqa: BLE001 - every client-side failure is a result to report
        return Answer(call.index, call.task, type(error).__name__, time.perf_counter() - start, str(error)[:200])


def closed_loop(url: str, calls: List[Call], concurrency: int, max_seconds: float,
                timeout: float) -> Tuple[List[Answer], float, int]:
    """``concurrency`` clients, each sending the next call when its previous one is answered;
    returns the answers, the seconds until the last one and how many calls were never sent."""
    pending, lock, answers = iter(calls), threading.Lock(), []
    start = time.perf_counter()
    stop_at = start + max_seconds

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as client:
            while True:
                with lock:
                    call = next(pending, None) if time.perf_counter() < stop_at else None
                if call is None:
                    return
                answer = call_once(client, call)
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=client_loop, name=f"client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers, key=lambda a: a.index), time.perf_counter() - start, len(calls) - len(answers)


TOKENS = re.compile(r'^mot_generated_tokens_total\{modality="(\w+)"\} (\S+)$', re.M)
REQUESTS = re.compile(r'^mot_requests_total\{task="(\w+)",status="(\w+)"\} (\S+)$', re.M)


def server_counts(client: httpx.Client) -> Tuple[Counter, Counter]:
    """Generated tokens by modality and answered requests by status, from ``GET /metrics``."""
    text = client.get("/metrics").raise_for_status().text
    tokens = Counter({m: float(v) for m, v in TOKENS.findall(text)})
    statuses = Counter()
    for _, status, count in REQUESTS.findall(text):
        statuses[status] += float(count)
    return tokens, statuses


def percentile(values: List[float], p: float) -> Optional[float]:
    """Nearest-rank percentile (with few samples, p99 is the slowest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Result:
    strategy: str
    concurrency: int
    sent: int
    completed: int
    failed: int
    unsent: int
    seconds: float
    requests_per_s: float
    tokens: Dict[str, float]
    tokens_per_s: float
    failures: Dict[str, int]
    latency_s: Dict[str, Dict[str, Optional[float]]]
    server_ok: float  # answers the server counted "ok" (must equal completed)
    left_in_server: dict  # running and waiting after the run (must be none)
    answers: List[Answer] = field(repr=False)
    vs_one_at_a_time: Dict[str, Optional[float]] = field(default_factory=dict)
    compared: int = 0
    differing: int = 0
    differing_tasks: Dict[str, int] = field(default_factory=dict)


def measure(server: BackgroundServer, clients: ProcessPoolExecutor, strategy: str, calls: List[Call],
            concurrency: int, args, timeout: float) -> Result:
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        tokens_before, statuses_before = server_counts(client)
        answers, seconds, unsent = clients.submit(closed_loop, server.url, calls, concurrency, args.max_seconds,
                                                  timeout).result()
        tokens_after, statuses_after = server_counts(client)
        health = client.get("/health").json()
    tokens = {m: tokens_after[m] - tokens_before[m] for m in tokens_after}
    done = [a for a in answers if a.ok]
    latency = defaultdict(list)
    for answer in done:
        latency[answer.task].append(answer.seconds)
    return Result(strategy, concurrency, len(answers), len(done), len(answers) - len(done), unsent, seconds,
                  len(done) / seconds, tokens, sum(tokens.values()) / seconds,
                  dict(Counter(f"{a.task}:{a.status}" for a in answers if not a.ok)),
                  {t: dict(p50=percentile(v, 50), p99=percentile(v, 99)) for t, v in sorted(latency.items())},
                  statuses_after["ok"] - statuses_before["ok"],
                  dict(running=health.get("running"), waiting=health.get("waiting")), answers)


def warm_up(server: BackgroundServer, calls: List[Call], timeout: float) -> None:
    with httpx.Client(base_url=server.url, timeout=timeout, trust_env=False) as client:
        for call in calls:
            answer = call_once(client, call)
            if not answer.ok:
                print(f"  warm-up {call.task}: {answer.status} {answer.output}", flush=True)


def serve_limits(strategy: str, args) -> Tuple[ServeLimits, bool]:
    batch = 1 if strategy == "one-at-a-time" else args.max_batch
    # the queue holds every client's request, so no 429 comes from the benchmark's own load
    queue = max(ServeLimits.max_queue, max(args.concurrency_list))
    return ServeLimits(max_batch=batch, max_queue=queue), strategy == "padded"


def compare(results: List[Result]) -> None:
    """Ratios to one-at-a-time at the same concurrency, and answers unlike the first one seen."""
    first: Dict[int, Tuple[str, str]] = {}
    for result in results:
        for answer in result.answers:
            if answer.ok:
                first.setdefault(answer.index, (answer.task, answer.output))
    baseline = {r.concurrency: r for r in results if r.strategy == "one-at-a-time"}
    for result in results:
        base = baseline.get(result.concurrency)
        result.vs_one_at_a_time = {
            "requests": result.requests_per_s / base.requests_per_s if base and base.requests_per_s else None,
            "tokens": result.tokens_per_s / base.tokens_per_s if base and base.tokens_per_s else None}
        differing = [a for a in result.answers if a.ok and first[a.index][1] != a.output]
        result.compared = sum(a.ok for a in result.answers)
        result.differing = len(differing)
        result.differing_tasks = dict(Counter(a.task for a in differing))


# ---- report ------------------------------------------------------------------------------------


def ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def markdown_tables(results: List[Result], tasks) -> str:
    lines = ["| strategy | C | done | failed | unsent | s | req/s | tok/s | req/s vs 1-at-a-time "
             "| tok/s vs 1-at-a-time | differing answers |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.strategy} | {r.concurrency} | {r.completed} | {r.failed} | {r.unsent} | {r.seconds:.1f} "
                     f"| {r.requests_per_s:.2f} | {r.tokens_per_s:.0f} | {ratio(r.vs_one_at_a_time['requests'])} "
                     f"| {ratio(r.vs_one_at_a_time['tokens'])} | {r.differing}/{r.compared} |")
    lines += ["", "Latency p50 / p99 (s) by task:", "",
              "| strategy | C | " + " | ".join(tasks) + " |", "|---|---:|" + "---:|" * len(tasks)]
    for r in results:
        cells = []
        for task in tasks:
            seen = r.latency_s.get(task)
            cells.append(f"{seen['p50']:.2f} / {seen['p99']:.2f}" if seen else "-")
        lines.append(f"| {r.strategy} | {r.concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problems(results: List[Result]) -> List[str]:
    """What a reader must not miss: failures, lost answers, requests left inside a server."""
    found = []
    for r in results:
        where = f"{r.strategy} C={r.concurrency}"
        if r.failures:
            found.append(f"{where}: failed {r.failures}")
            for answer in [a for a in r.answers if not a.ok][:3]:
                found.append(f"  request {answer.index} ({answer.task}): {answer.status} {answer.output}")
        if r.server_ok != r.completed:
            found.append(f"{where}: the server counted {r.server_ok:g} answers ok, the clients got {r.completed}")
        if r.left_in_server.get("running") or r.left_in_server.get("waiting"):
            found.append(f"{where}: left in the server after the run: {r.left_in_server}")
        if r.differing and r.strategy != "padded":
            found.append(f"{where}: {r.differing} answers differ from the first strategy's: {r.differing_tasks}")
    return found


def main(argv=None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(args.threads or serving_threads())
    machine = machine_info()
    print(", ".join(f"{k}={v}" for k, v in machine.items()), flush=True)
    model = ServedModel.from_run(args.run_dir, log=lambda _: None)
    pngs, wavs = uploads(model, args)
    calls = workload(model, args, pngs, wavs)
    # seeds unlike the workload's (below 2**31 like them: the vocoder's random state takes 32 bits)
    warm = [make_call(model, args, -1, task, 2**31 + i, pngs, wavs) for i, task in enumerate(model.tasks)]
    mix = Counter(c.task for c in calls)
    print(f"prepared in {time.perf_counter() - began:.0f} s (model, {len(pngs)} PNGs, {len(wavs)} WAVs)", flush=True)
    print(f"{model.name} ({model.setting}), tasks {dict(mix)}; max_batch {args.max_batch}, guidance "
          f"{args.guidance:g}, max_tokens {args.max_tokens}, max_units {args.max_units}, speech as "
          f"{args.speech_format}", flush=True)

    results = []
    clients = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))  # the load's own process
    for strategy in args.strategy_list:
        limits, padded = serve_limits(strategy, args)
        timeout = limits.timeout_seconds + 30  # past the server's own 504
        with BackgroundServer(model, limits, padded_towers=padded) as server:
            started = time.perf_counter()
            warm_up(server, warm, timeout)
            for _ in range(args.warmup_rounds):  # every shape the timed runs will meet, seen once
                clients.submit(closed_loop, server.url, calls, max(args.concurrency_list), args.max_seconds,
                               timeout).result()
            print(f"{strategy}: warmed up in {time.perf_counter() - started:.1f} s", flush=True)
            for concurrency in args.concurrency_list:
                result = measure(server, clients, strategy, calls, concurrency, args, timeout)
                results.append(result)
                print(f"{strategy} C={concurrency}: {result.completed}/{len(calls)} done, {result.failed} failed, "
                      f"{result.seconds:.1f} s", flush=True)
    clients.shutdown()
    compare(results)

    print()
    print(markdown_tables(results, model.tasks))
    found = problems(results)
    print("\n" + ("\n".join(["Problems:"] + found) if found else "No failed, lost or unequal requests."))
    wall = time.perf_counter() - began
    print(f"wall time {wall:.0f} s")
    if args.json:
        report = dict(machine=machine, model=dict(name=model.name, setting=model.setting, tasks=list(model.tasks)),
                      args={k: v for k, v in vars(args).items() if not k.endswith("_list")}, wall_seconds=wall,
                      workload=[dict(index=c.index, task=c.task, body=c.body, params=c.params) for c in calls],
                      results=[asdict(r) for r in results], problems=found)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
