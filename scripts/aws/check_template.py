"""Checks template.yaml for what cfn-lint and `sam validate --lint` do not see (run by scripts/aws/check.sh
with .venv-aws's Python): the contract with the Rust functions and the Makefile, and our own rules (no query
string in access logs, a DLQ behind every queue, no "*" resources, visibility timeout vs. worker timeout)."""

import json
import re
import sys
from pathlib import Path

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def ref_name(value) -> str | None:
    """The logical id behind {"Ref": X} or {"Fn::GetAtt": [X, ...]}."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return att[0] if isinstance(att, list) else str(att).split(".")[0]
    return None


template = cfn_yaml.load(str(ROOT / "template.yaml"))
resources = template["Resources"]
glob = template.get("Globals", {}).get("Function", {})
by_type = lambda t: {k: v for k, v in resources.items() if v["Type"] == t}  # noqa: E731
functions = by_type("AWS::Serverless::Function")


def branches(value) -> list:
    """The values an item may take: both branches of an Fn::If (AWS::NoValue dropped), else the item itself."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return [v for b in (yes, no) for v in branches(b) if v != {"Ref": "AWS::NoValue"}]
    return [value]


def policies(role: dict) -> list[dict]:
    """A role's inline policies, those under a condition included."""
    return [p for item in role["Properties"].get("Policies", []) for p in branches(item)]


def prop(fn: dict, name: str):
    return fn.get("Properties", {}).get(name, glob.get(name))


# Functions: runtime, architecture, makefile build with a target per function.
makefile = (ROOT / "Makefile").read_text()
for name, fn in functions.items():
    check(prop(fn, "Runtime") == "provided.al2023", f"{name}: Runtime must be provided.al2023")
    check(prop(fn, "Architectures") == ["arm64"], f"{name}: Architectures must be [arm64]")
    check(fn.get("Metadata", {}).get("BuildMethod") == "makefile", f"{name}: Metadata.BuildMethod must be makefile")
    check(re.search(rf"^build-{name}:", makefile, re.M) is not None, f"Makefile has no build-{name} target")
    check("Role" in fn.get("Properties", {}), f"{name}: needs its own least-privilege Role")

# Environment: every variable the Rust config names is set (OSB_TENANTS_SECRET_ID at least on the API;
# OSB_WEBHOOK_DLQ_URL on the webhook sender, the only one that moves messages there).
config_rs = ROOT / "shared/src/aws/config.rs"
env_names = set(re.findall(r'pub const \w+: &str = "(OSB_[A-Z_]+)";', config_rs.read_text()))
check(bool(env_names), f"no OSB_* variable names found in {config_rs.relative_to(ROOT)}")
global_env = glob.get("Environment", {}).get("Variables", {})
api_env = {**global_env, **functions["ApiFunction"]["Properties"].get("Environment", {}).get("Variables", {})}
for var in sorted(env_names - set(api_env) - {"OSB_WEBHOOK_DLQ_URL"}):
    problems.append(f"ApiFunction: environment variable {var} (shared/src/aws/config.rs) is not set")
webhook_env = functions.get("WebhookFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
check(ref_name(webhook_env.get("OSB_WEBHOOK_DLQ_URL")) == "WebhookDeadLetterQueue",
      "WebhookFunction: OSB_WEBHOOK_DLQ_URL must be the webhook dead-letter queue")
check(api_env.get("OSB_CATALOG_FILE") == "/var/task/catalog.json", "OSB_CATALOG_FILE must be /var/task/catalog.json")

# SQS consumers: partial batch responses, and the queue's visibility timeout >= 6 x timeout + batching window.
worker = functions["WorkerFunction"]
for fn_name, queue_name in (("WorkerFunction", "OperationsQueue"), ("WebhookFunction", "WebhookQueue")):
    fn = functions.get(fn_name, {})
    sqs_events = [e for e in fn.get("Properties", {}).get("Events", {}).values() if e["Type"] == "SQS"]
    check(len(sqs_events) == 1, f"{fn_name} needs exactly one SQS event")
    for event in sqs_events:
        p = event["Properties"]
        check(ref_name(p["Queue"]) == queue_name, f"{fn_name}: SQS event must read {queue_name}")
        check(p.get("FunctionResponseTypes") == ["ReportBatchItemFailures"],
              f"{fn_name} SQS event: FunctionResponseTypes must be [ReportBatchItemFailures]")
        queue = resources[ref_name(p["Queue"])]
        need = 6 * int(prop(fn, "Timeout")) + int(p.get("MaximumBatchingWindowInSeconds", 0))
        have = int(queue["Properties"].get("VisibilityTimeout", 30))
        check(have >= need, f"{ref_name(p['Queue'])}: VisibilityTimeout {have} < 6 x {fn_name} Timeout + window = {need}")

# The webhook sender reaches platform-chosen URLs: never in a VPC, never with secrets or the operations queue.
webhook_fn = functions.get("WebhookFunction", {})
check("VpcConfig" not in webhook_fn.get("Properties", {}) and "VpcConfig" not in glob,
      "WebhookFunction must not be attached to a VPC (SSRF isolation)")
webhook_grants = json.dumps(resources.get("WebhookFunctionRole", {}).get("Properties", {}).get("Policies", []))
for forbidden in ("secretsmanager:", "OperationsQueue", "dynamodb:Query", "TransactWriteItems"):
    check(forbidden not in webhook_grants, f"WebhookFunctionRole grants {forbidden}: more than delivery needs")
retention = int(resources["WebhookQueue"]["Properties"].get("MessageRetentionPeriod", 345600))
check(retention > 30 * 3600, "WebhookQueue: MessageRetentionPeriod must exceed the 30 h retry horizon")

# The scheduled sweep: when the worker handles it, a schedule invokes the worker.
if "broker.sweep()" in (ROOT / "functions/worker/src/lib.rs").read_text():
    check(any(e["Type"] in ("Schedule", "ScheduleV2") for e in worker["Properties"].get("Events", {}).values()),
          "WorkerFunction handles the sweep (Broker::sweep) but has no Schedule event")

# Queues: every queue that is not itself a dead-letter queue has one.
queues = by_type("AWS::SQS::Queue")
dlqs = {ref_name(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for q in queues.values() if "RedrivePolicy" in q.get("Properties", {})}
for name in queues.keys() - dlqs:
    check("RedrivePolicy" in queues[name].get("Properties", {}), f"{name}: no dead-letter queue (RedrivePolicy)")
alarmed = {ref_name(d["Value"]) for a in by_type("AWS::CloudWatch::Alarm").values()
           for d in a["Properties"].get("Dimensions", [])}
for name in dlqs:
    check(name in alarmed, f"{name}: dead-letter queue without an alarm")

# Table: keys and the sparse index the store code expects.
table = resources["Table"]["Properties"]
check([k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"], "Table: keys must be pk (HASH), sk (RANGE)")
indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
check("unfinished" in indexes and [k["AttributeName"] for k in indexes["unfinished"]["KeySchema"]]
      == ["unfinished_shard", "sk"], "Table: GSI unfinished (unfinished_shard, sk) missing")
check(table.get("TimeToLiveSpecification", {}).get("AttributeName") == "ttl", "Table: TTL attribute must be ttl")

# Access logs: never the query string (a `secret` query parameter may travel there) nor headers.
for name, api in by_type("AWS::Serverless::HttpApi").items():
    fmt = api["Properties"].get("AccessLogSettings", {}).get("Format", "")
    check(bool(fmt), f"{name}: access logging is off")
    for bad in ("querystring", "requestTemplate", "$input", "$context.request.", "header"):
        check(bad.lower() not in fmt.lower(), f"{name}: access log format contains {bad}")

# IAM: no wildcard resources or actions in our roles.
for name, role in by_type("AWS::IAM::Role").items():
    for policy in policies(role):
        for st in policy["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            check(st.get("Resource") != "*", f"{name}/{st.get('Sid')}: Resource '*'")
            check(not any("*" in a for a in actions), f"{name}/{st.get('Sid')}: wildcard action")

# IAM vs. the adapters: every AWS call in shared/src/aws/ is granted on the resource it targets (a missing
# grant would only show as AccessDenied in production). Table/queue set-up calls are for tests only.
SETUP_ONLY = {"create_table", "update_time_to_live", "describe_table", "delete_table", "create_queue", "purge_queue"}
TRANSACT_PARTS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def sdk_calls(file: str) -> set[str]:
    src = (ROOT / "shared/src/aws" / file).read_text()
    calls = {c for c in re.findall(r"\.\s*([a-z_]+)\(\)\s*\n?\s*\.", src) if c not in SETUP_ONLY}
    return {"".join(w.capitalize() for w in c.split("_")) for c in calls} | {
        TRANSACT_PARTS[p] for p in re.findall(r"\b(Put|Update|Delete|ConditionCheck)::builder\(\)", src)}


KNOWN = {
    "dynamodb": {"GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "TransactWriteItems",
                 "TransactGetItems", "BatchWriteItem", "ConditionCheckItem", "Scan"},
    "sqs": {"SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
            "ChangeMessageVisibility", "GetQueueAttributes"},
    "secretsmanager": {"GetSecretValue"},
}
used = {
    "dynamodb": sdk_calls("dynamodb.rs") & KNOWN["dynamodb"],
    "sqs": sdk_calls("sqs.rs") & KNOWN["sqs"],
    "secretsmanager": sdk_calls("secrets.rs") & KNOWN["secretsmanager"],
}
check("Scan" not in used["dynamodb"], "shared/src/aws/dynamodb.rs calls Scan")
# The one Scan: the maintenance re-encryption (shared/src/aws/maintenance.rs), run by the worker only.
maintenance_calls = sdk_calls("maintenance.rs") & KNOWN["dynamodb"]
check(maintenance_calls == {"Scan"}, f"shared/src/aws/maintenance.rs: expected only Scan, found {maintenance_calls}")


def granted(role: str, resource: str) -> set[str]:
    actions: set[str] = set()
    for policy in policies(resources[role]):
        for st in policy["PolicyDocument"]["Statement"]:
            if st.get("Effect") == "Allow" and ref_name(st.get("Resource")) == resource:
                actions |= set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    return actions


needs = {
    "ApiFunctionRole": [("Table", "dynamodb", used["dynamodb"]), ("OperationsQueue", "sqs", {"SendMessage"}),
                        ("TenantsSecret", "secretsmanager", used["secretsmanager"]),
                        ("SharingKeysSecret", "secretsmanager", used["secretsmanager"]),
                        ("AdminSecret", "secretsmanager", used["secretsmanager"])],
    "WorkerFunctionRole": [("Table", "dynamodb", used["dynamodb"] | maintenance_calls),
                           ("OperationsQueue", "sqs", used["sqs"] | {"ReceiveMessage", "DeleteMessage",
                                                                     "GetQueueAttributes"}),
                           ("WebhookQueue", "sqs", {"SendMessage"})],
    "ApiFunctionRole+": [("WebhookQueue", "sqs", {"SendMessage"})],
    # A callback is read with GetItem and written with a single conditional PutItem (store commit of one item).
    "WebhookFunctionRole": [("Table", "dynamodb", {"GetItem", "PutItem"}),
                            ("WebhookQueue", "sqs", used["sqs"] | {"ReceiveMessage", "DeleteMessage",
                                                                   "GetQueueAttributes"}),
                            ("WebhookDeadLetterQueue", "sqs", {"SendMessage"})],
}
for role, wants in needs.items():
    role = role.rstrip("+")
    for resource, service, actions in wants:
        missing = {f"{service}:{a}" for a in actions} - granted(role, resource)
        check(not missing, f"{role}: {sorted(missing)} on {resource} not granted (called in shared/src/aws/)")
check(bool(used["dynamodb"]) and "SendMessage" in used["sqs"], "found no SDK calls in shared/src/aws/ (parser drift?)")

for role in ("ApiFunctionRole", "WebhookFunctionRole"):
    check("dynamodb:Scan" not in granted(role, "Table"), f"{role}: dynamodb:Scan is for the worker's re-encryption only")

# KMS: the functions seal with RecordKey (OSB_KMS_KEY_ID); its key policy is the only grant of its use: the API
# and the worker both purposes, the webhook sender only `webhook`; nobody else any cryptographic action.
kms_calls = sdk_calls("kms.rs")
check(kms_calls >= {"GenerateDataKey", "Decrypt"}, f"shared/src/aws/kms.rs: GenerateDataKey/Decrypt not found ({kms_calls})")
check(ref_name(global_env.get("OSB_KMS_KEY_ID")) == "RecordKey", "OSB_KMS_KEY_ID must be RecordKey")
key = resources.get("RecordKey", {})
check(key.get("Type") == "AWS::KMS::Key", "RecordKey must be an AWS::KMS::Key")
check(key.get("DeletionPolicy") == "Retain", "RecordKey: DeletionPolicy must be Retain (the table is retained)")
key_props = key.get("Properties", {})
check(key_props.get("EnableKeyRotation") is True, "RecordKey: EnableKeyRotation must be true")
purpose_of = {"ApiFunctionRole": {"credentials", "webhook"}, "WorkerFunctionRole": {"credentials", "webhook"},
              "WebhookFunctionRole": {"webhook"}}
crypto = {"kms:" + c for c in kms_calls} | {"kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:*"}
seen: dict[str, set[str]] = {}
for st in key_props.get("KeyPolicy", {}).get("Statement", []):
    actions = set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    principals = st.get("Principal", {}).get("AWS", [])
    principals = principals if isinstance(principals, list) else [principals]
    names = [ref_name(p) for p in principals]
    uses = actions & crypto
    if not uses:
        continue
    check(all(n in purpose_of for n in names), f"RecordKey/{st.get('Sid')}: {names} may use the key")
    purposes = st.get("Condition", {}).get("StringEquals", {}).get("kms:EncryptionContext:purpose")
    purposes = set(purposes if isinstance(purposes, list) else [purposes]) if purposes else set()
    check(bool(purposes), f"RecordKey/{st.get('Sid')}: no kms:EncryptionContext:purpose condition")
    check(uses <= {"kms:" + c for c in kms_calls}, f"RecordKey/{st.get('Sid')}: grants {sorted(uses)}")
    for n in names:
        check(purposes <= purpose_of.get(n, set()), f"RecordKey/{st.get('Sid')}: {n} gets purposes {sorted(purposes)}")
        seen.setdefault(n, set()).update(f"{a}@{p}" for a in uses for p in purposes)
for n, purposes in purpose_of.items():
    want = {f"kms:{c}@{p}" for c in ("GenerateDataKey", "Decrypt") for p in purposes}
    check(want <= seen.get(n, set()), f"RecordKey: {n} lacks {sorted(want - seen.get(n, set()))}")

# Indexes the store queries: defined on the table and queryable by the function that lists them (the worker
# sweeps unfinished operations; the API's admin routes list the inventory).
dynamodb_rs = (ROOT / "shared/src/aws/dynamodb.rs").read_text()
INDEX_READERS = {"unfinished": "WorkerFunctionRole", "inventory": "ApiFunctionRole"}
for index in re.findall(r'pub const \w*INDEX\w*: &str = "([^"]+)";', dynamodb_rs):
    check(index in indexes, f"Table: no GSI {index} (shared/src/aws/dynamodb.rs)")
    role = INDEX_READERS.get(index)
    check(role is not None, f"check_template.py: say which role queries the GSI {index}")
    if role:
        queried = json.dumps([st.get("Resource") for p in policies(resources[role])
                              for st in p["PolicyDocument"]["Statement"] if "dynamodb:Query" in st["Action"]])
        check(f"/index/{index}" in queried, f"{role}: no dynamodb:Query on index {index}")
check("inventory" in indexes and [k["AttributeName"] for k in indexes["inventory"]["KeySchema"]]
      == ["inv_part", "inv_sort"], "Table: GSI inventory (inv_part, inv_sort) missing")

# PostgreSQL: the admin secret is a parameter (an ARN), read by the API and the worker only, granted to them only.
params = template.get("Parameters", {})
check("PostgresAdminSecretArn" in params, "Parameters: PostgresAdminSecretArn (the PostgreSQL admin secret) missing")
for fn_name in ("ApiFunction", "WorkerFunction"):
    env = functions[fn_name]["Properties"].get("Environment", {}).get("Variables", {})
    check(ref_name(env.get("OSB_POSTGRES_SECRET_ID")) == "PostgresAdminSecretArn",
          f"{fn_name}: OSB_POSTGRES_SECRET_ID must be the PostgresAdminSecretArn parameter")
for role in ("ApiFunctionRole", "WorkerFunctionRole"):
    check("secretsmanager:GetSecretValue" in granted(role, "PostgresAdminSecretArn"),
          f"{role}: secretsmanager:GetSecretValue on PostgresAdminSecretArn not granted (aws/secrets.rs reads it for aws/mod.rs)")
check("PostgresAdminSecretArn" not in webhook_grants, "WebhookFunctionRole must not read the PostgreSQL admin secret")

# VPC: the functions that reach the database may run in a VPC; the webhook sender never does (checked above).
# Every AWS service a VPC function calls (what its role grants, but logs: Lambda ships those itself) must be
# reachable in each VpcEndpoints mode: `create` makes an endpoint for it here; `existing-routing` is the
# operator's statement that routing exists (a NAT gateway or their own endpoints), which the parameter says.
conditions = template.get("Conditions", {})
in_vpc = json.dumps(conditions.get("InVpc", {}))
check("VpcSubnetIds" in in_vpc, "Conditions: InVpc must test the VpcSubnetIds parameter")
create_cond = json.dumps(conditions.get("CreateVpcEndpoints", {}))
check("InVpc" in create_cond and '"create"' in create_cond,
      "Conditions: CreateVpcEndpoints must be InVpc and VpcEndpoints = create")
check(sorted(params.get("VpcEndpoints", {}).get("AllowedValues", [])) == ["create", "existing-routing"],
      "Parameters: VpcEndpoints must allow exactly create and existing-routing")
endpoints = {}
for name, ep in by_type("AWS::EC2::VPCEndpoint").items():
    m = re.search(r"com\.amazonaws\.\$\{AWS::Region\}\.([a-z0-9-]+)", json.dumps(ep["Properties"].get("ServiceName")))
    check(m is not None, f"{name}: ServiceName must be com.amazonaws.${{AWS::Region}}.<service>")
    if m:
        endpoints[m.group(1)] = (name, ep)
vpc_functions = []
for fn_name, fn in functions.items():
    vpc = fn.get("Properties", {}).get("VpcConfig")
    if vpc is None:
        continue
    vpc_functions.append(fn_name)
    check(isinstance(vpc, dict) and vpc.get("Fn::If", [None])[0] == "InVpc",
          f"{fn_name}: VpcConfig must be !If [InVpc, …, AWS::NoValue] (no VPC unless subnets are given)")
    cfgs = branches(vpc)
    check(len(cfgs) == 1 and ref_name(cfgs[0].get("SubnetIds")) == "VpcSubnetIds"
          and ref_name(cfgs[0].get("SecurityGroupIds")) == "VpcSecurityGroupIds",
          f"{fn_name}: VpcConfig must use VpcSubnetIds and VpcSecurityGroupIds")
    role = ref_name(fn["Properties"]["Role"])
    managed = json.dumps(resources[role]["Properties"].get("ManagedPolicyArns", ""))
    check("AWSLambdaVPCAccessExecutionRole" in managed and "InVpc" in managed,
          f"{role}: needs AWSLambdaVPCAccessExecutionRole when InVpc (ENIs)")
    called = set()
    for policy in policies(resources[role]):
        for st in policy["PolicyDocument"]["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            called |= {a.split(":")[0] for a in actions} - {"logs"}
    check(bool(called), f"{fn_name}: found no AWS service in {role} (parser drift?)")
    for service in sorted(called):
        if service not in endpoints:
            problems.append(f"{fn_name} calls {service} from the VPC, but VpcEndpoints=create makes no endpoint for it")
            continue
        ep_name, ep = endpoints[service]
        p = ep["Properties"]
        check(ep.get("Condition") == "CreateVpcEndpoints", f"{ep_name}: must have Condition CreateVpcEndpoints")
        check(ref_name(p.get("VpcId")) == "VpcId", f"{ep_name}: VpcId must be the VpcId parameter")
        if service == "dynamodb":
            check(p.get("VpcEndpointType") == "Gateway" and ref_name(p.get("RouteTableIds")) == "VpcRouteTableIds",
                  f"{ep_name}: DynamoDB needs a Gateway endpoint on VpcRouteTableIds")
        else:
            check(p.get("VpcEndpointType") == "Interface" and p.get("PrivateDnsEnabled") is True
                  and ref_name(p.get("SubnetIds")) == "VpcSubnetIds"
                  and ref_name(p.get("SecurityGroupIds")) == "VpcSecurityGroupIds",
                  f"{ep_name}: {service} needs an Interface endpoint with private DNS in VpcSubnetIds/VpcSecurityGroupIds")
check(sorted(vpc_functions) == ["ApiFunction", "WorkerFunction"],
      f"VPC functions are {sorted(vpc_functions)}: ApiFunction and WorkerFunction reach the database")

# The secrets are generated, never plain text.
for name in ("TenantsSecret", "SharingKeysSecret", "AdminSecret"):
    secret = resources[name]["Properties"]
    check("SecretString" not in secret and "GenerateSecretString" in secret, f"{name} must use GenerateSecretString")
keys_gen = resources["SharingKeysSecret"]["Properties"]["GenerateSecretString"]
check(json.loads(keys_gen.get("SecretStringTemplate", "{}")).get("current") == keys_gen.get("GenerateStringKey"),
      "SharingKeysSecret: the generated key must be the current one")

# Alarms on the functions' EMF metrics name metrics and roll-up dimensions shared/src/metrics.rs emits.
metrics_rs = (ROOT / "shared/src/metrics.rs").read_text()
emitted = set(re.findall(r'\("([A-Z][A-Za-z]+)", "(?:Count|Seconds)"', metrics_rs))
rollups = set(re.findall(r'&\["([A-Z][A-Za-z]+)"\]', metrics_rs))
for name, alarm in by_type("AWS::CloudWatch::Alarm").items():
    props = alarm["Properties"]
    if props.get("Namespace") != "OsbBroker":
        continue
    check(props.get("MetricName") in emitted, f"{name}: metric {props.get('MetricName')} is not emitted (shared/src/metrics.rs)")
    dims = [d["Name"] for d in props.get("Dimensions", [])]
    check(len(dims) == 1 and dims[0] in rollups, f"{name}: dimensions {dims} are not a roll-up the code emits")

if problems:
    print("template.yaml check FAILED:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"template.yaml: {len(functions)} functions, {len(queues)} queues, env {sorted(env_names)}: OK")
