"""A small OSB broker on the openbrokerapi framework (PyPI, pinned in scripts/requirements-test.txt): an
upstream written by others, for tests/tests/upstream_openbrokerapi.rs. Loopback only.

    python openbrokerapi_broker.py PORT      (credentials from OBK_USER / OBK_PASSWORD)

Plans: "sync" finishes every call at once; "async" provisions and deprovisions asynchronously (two polls of
last_operation in progress, then succeeded) and needs accepts_incomplete=true. GET /inventory (no auth)
lists what exists, and the originating identities and contexts the mutating requests carried.
"""

import logging
import os
import secrets
import sys
import threading

from flask import Flask, jsonify, request
from openbrokerapi import api, errors
from openbrokerapi.catalog import ServicePlan
from openbrokerapi.service_broker import (
    Binding,
    BindState,
    DeprovisionServiceSpec,
    GetBindingSpec,
    LastOperation,
    OperationState,
    ProvisionedServiceSpec,
    ProvisionState,
    Service,
    ServiceBroker,
    UnbindSpec,
)

SERVICE_ID = "obk-service-0001"
SYNC_PLAN = "obk-plan-sync"
ASYNC_PLAN = "obk-plan-async"
POLLS_IN_PROGRESS = 2


class FixtureBroker(ServiceBroker):
    def __init__(self):
        self.lock = threading.Lock()
        self.instances = {}  # id -> {"plan_id", "state", "polls", "operation"}
        self.bindings = {}  # (instance id, binding id) -> credentials
        self.seen = []  # {"call", "identity", "context"} of mutating requests

    def _record(self, call, details):
        self.seen.append(
            {
                "call": call,
                "identity": request.headers.get("X-Broker-API-Originating-Identity"),
                "context": getattr(details, "context", None),
                "bind_resource": (request.get_json(silent=True) or {}).get("bind_resource"),
            }
        )

    def catalog(self):
        return [
            Service(
                id=SERVICE_ID,
                name="obk-db",
                description="A database from an openbrokerapi broker",
                bindable=True,
                tags=["fixture"],
                metadata={"displayName": "OBK DB", "shareable": False},
                plan_updateable=False,
                instances_retrievable=False,
                bindings_retrievable=True,
                plans=[
                    ServicePlan(id=SYNC_PLAN, name="sync", description="synchronous", free=True),
                    ServicePlan(
                        id=ASYNC_PLAN,
                        name="async",
                        description="asynchronous provision and deprovision",
                        free=False,
                        maximum_polling_duration=120,
                        maintenance_info={"version": "2.0.0", "description": "fixture"},
                        metadata={"bullets": ["slow"]},
                    ),
                ],
            )
        ]

    def provision(self, instance_id, details, async_allowed, **kwargs):
        with self.lock:
            self._record("provision", details)
            cur = self.instances.get(instance_id)
            if cur is not None:
                if cur["plan_id"] != details.plan_id:
                    raise errors.ErrInstanceAlreadyExists()
                if cur["state"] == "in progress":
                    return ProvisionedServiceSpec(ProvisionState.IS_ASYNC, operation=cur["operation"])
                return ProvisionedServiceSpec(ProvisionState.IDENTICAL_ALREADY_EXISTS)
            if details.plan_id == ASYNC_PLAN:
                if not async_allowed:
                    raise errors.ErrAsyncRequired()
                op = "provision-" + secrets.token_hex(4)
                self.instances[instance_id] = {
                    "plan_id": details.plan_id, "state": "in progress", "polls": 0, "operation": op, "kind": "provision"}
                return ProvisionedServiceSpec(ProvisionState.IS_ASYNC, operation=op)
            self.instances[instance_id] = {"plan_id": details.plan_id, "state": "succeeded", "polls": 0, "operation": None, "kind": "provision"}
            return ProvisionedServiceSpec(ProvisionState.SUCCESSFUL_CREATED)

    def deprovision(self, instance_id, details, async_allowed, **kwargs):
        with self.lock:
            self._record("deprovision", details)
            cur = self.instances.get(instance_id)
            if cur is None:
                raise errors.ErrInstanceDoesNotExist()
            for key in [k for k in self.bindings if k[0] == instance_id]:
                del self.bindings[key]
            if cur["plan_id"] == ASYNC_PLAN and async_allowed:
                op = "deprovision-" + secrets.token_hex(4)
                cur.update({"state": "in progress", "polls": 0, "operation": op, "kind": "deprovision"})
                return DeprovisionServiceSpec(is_async=True, operation=op)
            del self.instances[instance_id]
            return DeprovisionServiceSpec(is_async=False)

    def last_operation(self, instance_id, operation_data, service_id=None, plan_id=None, **kwargs):
        with self.lock:
            cur = self.instances.get(instance_id)
            if cur is None:
                raise errors.ErrInstanceDoesNotExist()
            if operation_data != cur["operation"]:
                return LastOperation(OperationState.FAILED, "unknown operation")
            if cur["state"] == "in progress":
                cur["polls"] += 1
                if cur["polls"] <= POLLS_IN_PROGRESS:
                    return LastOperation(OperationState.IN_PROGRESS, "working")
                if cur["kind"] == "deprovision":
                    del self.instances[instance_id]
                    raise errors.ErrInstanceDoesNotExist()
                cur["state"] = "succeeded"
            return LastOperation(OperationState.SUCCEEDED, "done")

    def bind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        with self.lock:
            self._record("bind", details)
            if instance_id not in self.instances:
                raise errors.ErrBadRequest("no such instance")
            creds = self.bindings.get((instance_id, binding_id))
            if creds is not None:
                return Binding(BindState.IDENTICAL_ALREADY_EXISTS, credentials=creds)
            creds = {"username": "u-" + binding_id[:8], "password": secrets.token_hex(12)}
            self.bindings[(instance_id, binding_id)] = creds
            return Binding(credentials=creds, syslog_drain_url="syslog://fixture")

    def get_binding(self, instance_id, binding_id, **kwargs):
        with self.lock:
            creds = self.bindings.get((instance_id, binding_id))
            if creds is None:
                raise errors.ErrBindingDoesNotExist()
            return GetBindingSpec(credentials=creds, syslog_drain_url="syslog://fixture")

    def unbind(self, instance_id, binding_id, details, async_allowed, **kwargs):
        with self.lock:
            self._record("unbind", details)
            if self.bindings.pop((instance_id, binding_id), None) is None:
                raise errors.ErrBindingDoesNotExist()
            return UnbindSpec(is_async=False)


def main():
    port = int(sys.argv[1])
    broker = FixtureBroker()
    logger = logging.getLogger("obk-fixture")
    logger.setLevel(logging.WARNING)
    app = Flask(__name__)
    app.register_blueprint(
        api.get_blueprint(
            broker, api.BrokerCredentials(os.environ["OBK_USER"], os.environ["OBK_PASSWORD"]), logger
        )
    )

    @app.route("/inventory")
    def inventory():
        with broker.lock:
            return jsonify(
                instances={k: v["state"] for k, v in broker.instances.items()},
                bindings=[f"{i}/{b}" for (i, b) in broker.bindings],
                seen=broker.seen,
            )

    app.run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
