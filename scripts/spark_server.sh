#!/usr/bin/env bash
# Starts a local Spark Connect server for the Spark engine's tests and prints the
# environment they read, for `eval`:
#
#   eval "$(scripts/spark_server.sh start)"   # LOYALTY_TEST_SPARK_REMOTE=sc://127.0.0.1:PORT
#   scripts/spark_server.sh stop
#
# pyspark (which carries Spark and its Connect server) comes from PyPI; Java 17
# must be installed (CI: apt-get install openjdk-17-jre-headless).
# LOYALTY_SPARK_DRIVER_MEMORY: the server's memory (default 2g; benchmarks use more).
set -euo pipefail

spark_home() { python3 -c "import pyspark, os; print(os.path.dirname(pyspark.__file__))"; }
state=${LOYALTY_SPARK_STATE:-${TMPDIR:-/tmp}/loyalty-spark}

case "${1:-start}" in
stop)
    if [ -d "$state" ]; then
        SPARK_PID_DIR="$state/pids" SPARK_LOG_DIR="$state/logs" \
            "$(spark_home)/sbin/stop-connect-server.sh" >&2 || true
    fi
    exit 0
    ;;
start) ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "pyspark[connect]==4.3.0" >&2
command -v java >/dev/null || { echo "java is required (openjdk-17-jre-headless)" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A server left running from this state folder (an earlier start never stopped)
# would make Spark refuse to start another: it is ours, so it is stopped first.
"$0" stop
mkdir -p "$state/pids" "$state/logs"
SPARK_PID_DIR="$state/pids" SPARK_LOG_DIR="$state/logs" "$(spark_home)/sbin/start-connect-server.sh" \
    --master 'local[2]' \
    --driver-memory "${LOYALTY_SPARK_DRIVER_MEMORY:-2g}" \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$port" \
    --conf spark.sql.shuffle.partitions=4 >&2
# The server takes some seconds (a JVM, then Spark): wait until it listens.
for _ in $(seq 180); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
    sleep 0.5
done
python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null ||
    { echo "the Spark Connect server did not start; logs in $state/logs" >&2; exit 1; }
echo "export LOYALTY_TEST_SPARK_REMOTE=sc://127.0.0.1:$port"
echo "Spark Connect on 127.0.0.1:$port (local[2]); logs in $state/logs" >&2
