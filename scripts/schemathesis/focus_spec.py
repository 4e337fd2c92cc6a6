"""Writes a copy of the official OSB Swagger 2.0 file whose service_id/plan_id fields are restricted to
the demo catalog's ids, so that generated requests reach provisioning, binding and polling logic
instead of stopping at "unknown service". Usage: focus_spec.py IN OUT"""
import sys

import yaml

SERVICE_IDS = ["6d3a9a9e-6c2f-4c55-9d0e-3b1f2f6c1a01"]
PLAN_IDS = [
    "0a7f4a34-5b0b-4b8e-8d4e-1f0d3c9a2b11",
    "1b8e5b45-6c1c-4c9f-9e5f-2a1e4d0b3c22",
    "2c9f6c56-7d2d-4daf-8f60-3b2f5e1c4d33",
]
IDS = {"type": "string", "enum": ["fz-1", "fz-2", "fz-3"]}

spec = yaml.safe_load(open(sys.argv[1]))
for name in ("ServiceInstanceProvisionRequest", "ServiceInstanceUpdateRequest", "ServiceBindingRequest"):
    props = spec["definitions"][name]["properties"]
    props["service_id"] = {"type": "string", "enum": SERVICE_IDS}
    if "plan_id" in props:
        props["plan_id"] = {"type": "string", "enum": PLAN_IDS}
spec["parameters"]["service_id"]["enum"] = SERVICE_IDS
spec["parameters"]["plan_id"]["enum"] = PLAN_IDS
for path in spec["paths"].values():
    for p in path.get("parameters", []):
        if p.get("name") in ("instance_id", "binding_id"):
            p.update(IDS)
yaml.safe_dump(spec, open(sys.argv[2], "w"), sort_keys=False)
