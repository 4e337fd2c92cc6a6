"""Creates the broker's AWS resources on a local endpoint (moto server) for `cargo lambda watch`, from
template.yaml's own definitions (table keys, index, TTL; a tenants secret shaped like the generated one),
and prints the environment to export. Run with .venv-aws's Python (it has boto3 and cfn-lint's YAML loader):

    .venv-aws/bin/python scripts/aws/local-resources.py http://127.0.0.1:5055 > .local-aws.env

Idempotent: existing resources are reused (the secret keeps its password)."""

import json
import os
import secrets
import sys
from pathlib import Path

import boto3
from botocore.exceptions import ClientError
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
NAME = "osb-local"


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].startswith("http"):
        sys.exit(f"usage: {sys.argv[0]} http://127.0.0.1:PORT")
    endpoint = sys.argv[1]
    region = os.environ.get("AWS_REGION", "us-east-1")
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    ddb, sqs, sm, kms = (
        session.client(s, endpoint_url=endpoint) for s in ("dynamodb", "sqs", "secretsmanager", "kms")
    )

    table = cfn_yaml.load(str(ROOT / "template.yaml"))["Resources"]["Table"]["Properties"]
    try:
        ddb.create_table(
            TableName=NAME,
            BillingMode=table["BillingMode"],
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            GlobalSecondaryIndexes=table["GlobalSecondaryIndexes"],
        )
        ddb.update_time_to_live(
            TableName=NAME,
            TimeToLiveSpecification={"AttributeName": table["TimeToLiveSpecification"]["AttributeName"], "Enabled": True},
        )
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dlq = sqs.create_queue(QueueName=f"{NAME}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"{NAME}-operations",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    webhook_dlq_url = sqs.create_queue(QueueName=f"{NAME}-webhooks-dlq")["QueueUrl"]
    webhook_dlq_arn = sqs.get_queue_attributes(QueueUrl=webhook_dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    webhook_queue = sqs.create_queue(
        QueueName=f"{NAME}-webhooks",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": webhook_dlq_arn, "maxReceiveCount": "5"})},
    )["QueueUrl"]
    try:
        secret = sm.describe_secret(SecretId=f"{NAME}-tenants")["ARN"]
    except ClientError:
        tenant = {"name": "local", "username": "broker", "password": secrets.token_urlsafe(24)}
        secret = sm.create_secret(Name=f"{NAME}-tenants", SecretString=json.dumps(tenant))["ARN"]
    tenant = json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])
    try:
        keys_secret = sm.describe_secret(SecretId=f"{NAME}-sharing-keys")["ARN"]
    except ClientError:
        keys = {"current": "k1", "k1": secrets.token_urlsafe(36)}
        keys_secret = sm.create_secret(Name=f"{NAME}-sharing-keys", SecretString=json.dumps(keys))["ARN"]
    # The key whose data keys seal the stored secrets (the template's RecordKey), found again by its alias.
    alias = f"alias/{NAME}-records"
    try:
        record_key = kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except ClientError:
        record_key = kms.create_key(Description=f"{NAME} record key")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName=alias, TargetKeyId=record_key)

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "OSB_TABLE_NAME": NAME,
        "OSB_KMS_KEY_ID": record_key,
        "OSB_OPERATIONS_QUEUE_URL": queue,
        "OSB_WEBHOOK_QUEUE_URL": webhook_queue,
        "OSB_WEBHOOK_DLQ_URL": webhook_dlq_url,
        "OSB_TENANTS_SECRET_ID": secret,
        "OSB_SHARING_KEYS_SECRET_ID": keys_secret,
        "OSB_CATALOG_FILE": str(ROOT / "shared/catalog/demo.json"),
        "RUST_LOG": "info",
    }
    for key, value in env.items():
        print(f"{key}={value}")
    creds = tenant["tenants"][0] if "tenants" in tenant else tenant
    print(f"tenant {creds['name']}: username {creds['username']}, password {creds['password']}", file=sys.stderr)


if __name__ == "__main__":
    main()
