"""Verifies one webhook delivery with the official Standard Webhooks library (PyPI `standardwebhooks`).

Input on stdin, JSON: {"secret": "<the platform's secret>", "headers": {...}, "body_b64": "<raw body>"}.
A receiver using the library passes the secret as "whsec_" + base64(secret's UTF-8 bytes).
Exit 0 and print the parsed payload when `webhook-signature` verifies; exit 1 with the error otherwise.
Used by the end-to-end tests (tests/tests/webhooks.rs); also a working example for platform developers.
"""
import base64
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    req = json.load(sys.stdin)
    key = "whsec_" + base64.b64encode(req["secret"].encode("utf-8")).decode("ascii")
    body = base64.b64decode(req["body_b64"])
    try:
        payload = Webhook(key).verify(body, req["headers"])
    except Exception as e:  # the library raises WebhookVerificationError and friends
        print(f"verification failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
