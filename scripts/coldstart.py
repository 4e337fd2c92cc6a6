#!/usr/bin/env python3
"""Cold-start benchmark of the Lambda binaries, on loopback.

For each run it starts a fresh process of the function's release binary against a minimal Lambda Runtime API
served here, and measures
  init    = process start -> the function's first `GET /invocation/next` (config, SDK clients, secret read),
  first   = that request -> the function's response to the first event,
with DynamoDB, SQS and Secrets Manager served by a moto server on loopback (table, queue and tenants secret are
created first). It prints the median and max over the runs and the binaries' sizes.

Usage: scripts/coldstart.py [--runs N] [--profile release-lambda|release] [--target-dir DIR]
Needs the binaries of that profile, built for this machine as the Lambda packages are built (Makefile):
  cargo build --profile release-lambda -p osb-api -p osb-worker -p osb-webhooks --no-default-features
and the test tools (scripts/test-tools.sh).
"""
import argparse
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Serves one event, records when it was asked for and when it was answered."""

    def __init__(self, event):
        super().__init__(("127.0.0.1", 0), Handler)
        self.event = event
        self.first_next = None
        self.responded = None
        self.response = None
        self.served = False
        self.done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if self.path.endswith("/invocation/next"):
            if srv.served:
                srv.done.wait(30)  # keep the function parked until the run ends
                self.send_response(410)
                self.end_headers()
                return
            srv.first_next = time.perf_counter()
            srv.served = True
            body = json.dumps(srv.event).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        if "/response" in self.path or "/error" in self.path:
            srv.responded = time.perf_counter()
            srv.response = (self.path, payload[:300])
            srv.done.set()
        self.send_response(202)
        self.end_headers()


def aws_env(endpoint):
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def prepare_aws(endpoint):
    import boto3

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb = boto3.client("dynamodb", **kw)
    ddb.create_table(
        TableName="osb-bench",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    url = boto3.client("sqs", **kw).create_queue(QueueName="osb-bench-ops")["QueueUrl"]
    webhooks = boto3.client("sqs", **kw).create_queue(QueueName="osb-bench-webhooks")["QueueUrl"]
    boto3.client("secretsmanager", **kw).create_secret(
        Name="osb-bench-tenants",
        SecretString=json.dumps({"name": "lambda", "username": "lambda-user", "password": "lambda-pass"}),
    )
    boto3.client("secretsmanager", **kw).create_secret(
        Name="osb-bench-sharing-keys",
        SecretString=json.dumps({"current": "k1", "k1": "bench-sharing-key-material-0123456789"}),
    )
    key = boto3.client("kms", **kw).create_key(Description="osb-bench record key")["KeyMetadata"]["Arn"]
    return {"OSB_TABLE_NAME": "osb-bench", "OSB_OPERATIONS_QUEUE_URL": url, "OSB_WEBHOOK_QUEUE_URL": webhooks,
            "OSB_TENANTS_SECRET_ID": "osb-bench-tenants", "OSB_SHARING_KEYS_SECRET_ID": "osb-bench-sharing-keys",
            "OSB_KMS_KEY_ID": key}


def run_once(binary, event, env):
    api = RuntimeApi(event)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    full_env = dict(os.environ)
    full_env.update(env)
    full_env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "RUST_LOG": "warn",
    })
    start = time.perf_counter()
    proc = subprocess.Popen([str(binary)], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ok = api.done.wait(30)
    proc.kill()
    _, err = proc.communicate()
    api.shutdown()
    if not ok or api.first_next is None:
        sys.exit(f"{binary.name}: no response within 30 s\n{err.decode(errors='replace')[-2000:]}")
    return (api.first_next - start) * 1000, (api.responded - api.first_next) * 1000, api.response


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profile", default="release-lambda")
    ap.add_argument("--target-dir", default=str(ROOT / "target"))
    args = ap.parse_args()
    release = Path(args.target_dir) / args.profile
    moto = ROOT / ".venv/bin/moto_server"
    port = free_port()
    server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        env = aws_env(endpoint)
        env.update(prepare_aws(endpoint))
        api_event = json.loads((ROOT / "functions/api/fixtures/apigw-v2-catalog.json").read_text())
        sqs_event = json.loads((ROOT / "functions/worker/fixtures/sqs-operation-event.json").read_text())
        callback_event = json.loads((ROOT / "functions/webhooks/fixtures/sqs-callback-event.json").read_text())
        print(f"| binary | size (x86_64, profile {args.profile}) | init p50 | init max | first event p50 | runs |")
        print(f"|---|---|---|---|---|---|")
        for name, event in (("api", api_event), ("worker", sqs_event), ("webhooks", callback_event)):
            binary = release / name
            if not binary.exists():
                sys.exit(f"{binary} is missing: cargo build --profile {args.profile} -p osb-api -p osb-worker -p osb-webhooks --no-default-features")
            inits, firsts = [], []
            for _ in range(args.runs):
                init, first, response = run_once(binary, event, env)
                if "/error" in response[0]:
                    sys.exit(f"{name}: the function reported an error: {response[1]!r}")
                inits.append(init)
                firsts.append(first)
            size = binary.stat().st_size / 1e6
            print(f"| {name} | {size:.1f} MB | {statistics.median(inits):.1f} ms | {max(inits):.1f} ms | {statistics.median(firsts):.1f} ms | {args.runs} |")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
