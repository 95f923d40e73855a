#!/usr/bin/env bash
# Start a Spark standalone master or worker with pyspark's spark-class (as melanoma.embedded does).
# The master advertises SPARK_MASTER_HOST (compose: its service name), the address that
# workers and drivers reach it at; its web UI listens on every interface of the container.
set -euo pipefail
SPARK_HOME=$(python3 -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
case "${1:-}" in
  master)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
      --host "${SPARK_MASTER_HOST:-$(hostname)}" --port 7077 --webui-port 8080 ;;
  worker)
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      "${SPARK_MASTER_URL:-spark://spark-master:7077}" \
      --cores "${SPARK_WORKER_CORES:-2}" --memory "${SPARK_WORKER_MEMORY:-4g}" --webui-port 8081 ;;
  *)
    echo "usage: spark-entrypoint master|worker" >&2; exit 2 ;;
esac
