"""Check that replicas in other regions answer what the primary answers.

    THEMIS_CLIENT_CONF='http::addr=primary:8080;api_key=KEY' python geo_replication_check.py \\
        --replica https://replica-eu:8765 [--replica ...] --ca ca.pem --cert client.pem \\
        --key client.key --metric cpu --entity host1 --dimension 768 [--deadline 60]

Asks the primary (through the SDK) and every replica (``themis wal serve`` over HTTPS
with a client certificate: the reads need the trust that applying needs) the same
questions: every point of one series, and the 5 nearest vectors to three fixed probe
vectors. Polls until every replica answers exactly as the primary or the deadline
passes, and prints one JSON line: ``{"agree", "points", "seconds", "replicas": {url:
agrees}}``. Exits 1 when a replica still differs at the deadline.
"""

from __future__ import annotations

import argparse
import json
import random
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

from themisdb import ThemisClient

K = 5
Answer = tuple[list[list[Any]], list[list[str]]]


def probes(dimension: int) -> list[list[float]]:
    rng = random.Random(42)
    return [[rng.gauss(0, 1) for _ in range(dimension)] for _ in range(3)]


def primary_answer(client: ThemisClient, args: argparse.Namespace) -> Answer:
    points = client.timeseries.query(args.metric, args.entity)
    hits = [client.vectors.search(p, k=K) for p in probes(args.dimension)]
    return (
        [[p["timestamp_ms"], p["value"]] for p in points],
        [[h["pk"] for h in found] for found in hits],
    )


def replica_answer(url: str, context: ssl.SSLContext, args: argparse.Namespace) -> Answer:
    def call(path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data=data)  # noqa: S310 - https only
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:  # noqa: S310
            return json.loads(resp.read())

    query = urllib.parse.urlencode({"metric": args.metric, "entity": args.entity})
    points = call(f"/ts/query?{query}")["points"]
    hits = [call("/vectors/search", {"vector": p, "k": K}) for p in probes(args.dimension)]
    return (
        [[p["timestamp_ms"], p["value"]] for p in points],
        [[h["pk"] for h in found["results"]] for found in hits],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replica", action="append", required=True, metavar="HTTPS_URL")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--entity", required=True)
    parser.add_argument("--dimension", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    for url in args.replica:
        if not url.startswith("https://"):
            parser.error(f"--replica {url}: a replica's reads are served over https:// only")
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    began = time.monotonic()
    with ThemisClient() as client:
        while True:
            wanted = primary_answer(client, args)
            agrees = {url: replica_answer(url, context, args) == wanted for url in args.replica}
            if all(agrees.values()) or time.monotonic() - began > args.deadline:
                break
            time.sleep(0.2)
    report = {
        "agree": all(agrees.values()),
        "points": len(wanted[0]),
        "seconds": round(time.monotonic() - began, 2),
        "replicas": agrees,
    }
    print(json.dumps(report), flush=True)
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
