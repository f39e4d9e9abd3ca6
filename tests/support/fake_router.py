"""A stand-in for ``text-embeddings-router`` in unit tests (stdlib only, run as a script).

It takes the router's flags that pytei passes (``--model-id --hostname --port
--prometheus-port --pooling``), reads the same environment variables clap would when a flag is
missing, binds the prometheus port for a moment like the real router (and exits if it is
busy), serves ``/health`` and ``/info`` (``/info`` behind ``API_KEY`` like TEI), logs
``Starting HTTP server: <addr>`` then ``Ready``, answers ``POST /embed`` with deterministic
unit vectors (so a load test has something to load), and drains on SIGTERM/SIGINT.

``--fake-*`` flags make it misbehave on demand: load slowly, panic (SIGABRT), exit with a
status, die after becoming ready, answer /health with 503, ignore SIGTERM, or write its argv,
environment and pid to a JSON file for the test to inspect.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time


def parse() -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="text-embeddings-router")
    parser.add_argument("--model-id", default=env.get("MODEL_ID"))
    parser.add_argument("--hostname", default=env.get("HOSTNAME", "0.0.0.0"))
    parser.add_argument("-p", "--port", type=int, default=int(env.get("PORT", "3000")))
    parser.add_argument("--prometheus-port", type=int, default=int(env.get("PROMETHEUS_PORT", "9000")))
    parser.add_argument("--pooling", default=env.get("POOLING"))
    parser.add_argument("--served-model-name", default=env.get("SERVED_MODEL_NAME"))
    parser.add_argument("--dtype", default=env.get("DTYPE"))
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument(
        "--fake-delay", type=float, default=0.0, help="seconds of 'model loading' before binding"
    )
    parser.add_argument("--fake-crash", choices=["abort", "exit"], help="die before becoming ready")
    parser.add_argument("--fake-exit-code", type=int, default=1)
    parser.add_argument("--fake-crash-after", type=float, help="abort this many seconds after becoming ready")
    parser.add_argument("--fake-health-status", type=int, default=200)
    parser.add_argument("--fake-ignore-term", action="store_true", help="ignore SIGTERM and SIGINT")
    parser.add_argument("--fake-record", help="write argv, environment and pid to this JSON file")
    parser.add_argument("--fake-embed-ms", type=float, default=2.0, help="seconds of 'inference' per /embed, in ms")
    parser.add_argument(
        "--fake-model-type", default="embedding", choices=["embedding", "reranker", "classifier"]
    )
    args = parser.parse_args()
    if args.model_id is None:
        parser.error("--model-id is required")
    return args


def log(message: str) -> None:
    print(f"2026-01-01T00:00:00.000000Z  INFO text_embeddings_router: {message}", flush=True)


def info(args: argparse.Namespace) -> dict[str, object]:
    if args.fake_model_type == "embedding":
        model_type: dict[str, object] = {"embedding": {"pooling": args.pooling or "mean"}}
    else:
        labels = {"0": "LABEL_0"} if args.fake_model_type == "reranker" else {"0": "neg", "1": "pos"}
        model_type = {
            args.fake_model_type: {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}
        }
    return {
        "model_id": args.model_id,
        "model_sha": None,
        "model_dtype": "float32",
        "served_model_name": args.served_model_name or args.model_id,
        "model_type": model_type,
        "max_concurrent_requests": 512,
        "max_input_length": 256,
        "max_batch_tokens": args.max_batch_tokens,
        "max_batch_requests": 4,
        "max_client_batch_size": 32,
        "auto_truncate": True,
        "tokenization_workers": 1,
        "version": "1.9.3",
        "sha": "06670157fb6c1523482219bdb2d1660277d38088",
        "docker_label": None,
    }


def embedding(text: str, dim: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    values = [b - 127.5 for b in digest[:dim]]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def tokens(text: str) -> list[dict[str, object]]:
    words = ["[CLS]", *text.split(), "[SEP]"]
    return [
        {"id": 100 + i, "text": w, "special": w in ("[CLS]", "[SEP]"), "start": None, "stop": None}
        for i, w in enumerate(words)
    ]


def main() -> None:
    args = parse()
    if args.fake_record:
        record = {"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}
        tmp = args.fake_record + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, args.fake_record)
    if args.fake_ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As TEI v1.9.3 logs its Args (Debug format): the API key in plain text, as upstream does.
    key = os.environ.get("API_KEY")
    shown = "None" if key is None else 'Some("' + key.replace("\\", "\\\\").replace('"', '\\"') + '")'
    log(
        f'Args {{ model_id: "{args.model_id}", hostname: "{args.hostname}", port: {args.port}, '
        f"api_key: {shown}, json_output: false }}"
    )
    log("Starting model backend")
    time.sleep(args.fake_delay)
    if args.fake_crash == "abort":
        print("thread 'main' panicked at router/src/lib.rs:152:10:\ntokenizer.json not found", flush=True)
        os.abort()
    if args.fake_crash == "exit":
        print("Error: Could not create backend\n\nCaused by:\n    fake failure", flush=True)
        sys.exit(args.fake_exit_code)
    log("Warming up model")

    # The real router binds the prometheus port transiently at startup and fails if it is taken.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((args.hostname, args.prometheus_port))
    except OSError as exc:
        print(f"Error: failed to build prometheus recorder: {exc}", flush=True)
        sys.exit(1)
    finally:
        probe.close()

    api_key = os.environ.get("API_KEY")
    body = json.dumps(info(args)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/health", "/", "/ping"):
                status = args.fake_health_status
                payload = b"" if status == 200 else b'{"error":"unhealthy","error_type":"Unhealthy"}'
            elif self.path == "/info":
                if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                    status, payload = 401, b""
                else:
                    status, payload = 200, body
            else:
                status, payload = 404, b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path not in ("/embed", "/tokenize"):
                status, payload = 404, b""
            elif api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                status, payload = 401, b""
            else:
                try:
                    inputs = json.loads(raw)["inputs"]
                    texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
                except (ValueError, KeyError, TypeError):
                    status, payload = 422, b'{"error":"invalid body","error_type":"Validation"}'
                else:
                    if self.path == "/tokenize":  # [CLS] words [SEP], as TEI lists tokens
                        answer: list[object] = [tokens(t) for t in texts]
                    else:
                        time.sleep(args.fake_embed_ms / 1000)
                        answer = [embedding(t) for t in texts]
                    status, payload = 200, json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *rest: object) -> None:
            pass

    try:
        server = http.server.ThreadingHTTPServer((args.hostname, args.port), Handler)
        # drain like TEI: requests in flight at SIGTERM are answered before the process exits
        server.daemon_threads = False
    except OSError as exc:
        print(
            f"Error: could not bind {args.hostname}:{args.port}: {exc} (Address already in use?)", flush=True
        )
        sys.exit(1)

    def graceful(signum: int, frame: object) -> None:
        log("signal received, starting graceful shutdown")
        threading.Thread(target=server.shutdown, daemon=True).start()

    if not args.fake_ignore_term:
        signal.signal(signal.SIGTERM, graceful)
        signal.signal(signal.SIGINT, graceful)
    if args.fake_crash_after is not None:
        threading.Timer(args.fake_crash_after, os.abort).start()
    log(f"Starting HTTP server: {args.hostname}:{args.port}")
    log("Ready")
    server.serve_forever(poll_interval=0.05)
    server.server_close()


if __name__ == "__main__":
    main()
