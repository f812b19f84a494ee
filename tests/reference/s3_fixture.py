"""What the object-storage tests do to the S3-compatible server (moto) they
start: make a bucket and upload a folder into it, make an IAM user with an
access key, and switch authentication on (moto accepts any credentials until
then). Prints JSON where it has something to say."""

import json
import os
import sys
import urllib.request

import boto3


def client(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )


def upload(endpoint: str, bucket: str, folder: str, prefix: str) -> None:
    s3 = client("s3", endpoint)
    if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=bucket)
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(root, name)
            key = "/".join(p for p in [prefix, os.path.relpath(path, folder).replace(os.sep, "/")] if p)
            s3.upload_file(path, bucket, key)


def user(endpoint: str) -> None:
    iam = client("iam", endpoint)
    iam.create_user(UserName="rwp-worker")
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="rwp-worker", PolicyName="all", PolicyDocument=json.dumps(everything))
    key = iam.create_access_key(UserName="rwp-worker")["AccessKey"]
    print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))


def enforce(endpoint: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).read()


if __name__ == "__main__":
    command, endpoint, *rest = sys.argv[1:]
    {"upload": upload, "user": user, "enforce": enforce}[command](endpoint, *rest)
