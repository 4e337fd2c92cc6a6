"""Plays the worker's two triggers locally, against `cargo lambda watch`: the SQS event source mapping (receives
batches from the operations queue on a local endpoint (moto), invokes `worker` with an SQS event, deletes the
messages not reported in `batchItemFailures`; failed ones come back after the visibility timeout) and the
EventBridge schedule (a "Scheduled Event" every minute: the sweep of stalled operations).
Run with .venv-aws's Python, the environment printed by local-resources.py exported (docs/deploy.md):

    .venv-aws/bin/python scripts/aws/local-worker.py http://127.0.0.1:9011 [--once]

Stops on Ctrl-C; with --once after the first empty receive."""

import json
import os
import sys
import time
import urllib.request

import boto3

VISIBILITY_SECONDS = 30
SWEEP_EVERY_SECONDS = 60
SCHEDULED_EVENT = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}


def invoke(url: str, event: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read() or b"{}") or {}


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--once"]
    if len(args) != 1:
        sys.exit(f"usage: {sys.argv[0]} http://127.0.0.1:WATCH_PORT [--once]")
    invoke_url = f"{args[0].rstrip('/')}/2015-03-31/functions/worker/invocations"
    queue_url = os.environ["OSB_OPERATIONS_QUEUE_URL"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    next_sweep = 0.0
    while True:
        if time.monotonic() >= next_sweep:
            print(f"worker: sweep {invoke(invoke_url, SCHEDULED_EVENT)}", flush=True)
            next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5,
                                       VisibilityTimeout=VISIBILITY_SECONDS,
                                       MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not messages:
            if "--once" in sys.argv:
                return
            continue
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region,
        } for m in messages]}
        result = invoke(invoke_url, event)
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        print(f"worker: {len(messages)} messages, {len(failed)} failed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
