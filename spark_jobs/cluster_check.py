"""Smallest useful Spark application: proves the cluster runs Python tasks on its executors.

Usage: spark-submit cluster_check.py OUTPUT_JSON

Sums the squares of 0..99,999 over 8 partitions and writes the result with the
executor hosts and Python version that computed it. Used by the embedded-stack
test and as a first check of a new cluster.
"""

from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession


def main(output: str) -> None:
    spark = SparkSession.builder.appName("melanoma-cluster-check").getOrCreate()
    sc = spark.sparkContext

    def where(_):
        import platform
        import socket

        yield socket.gethostname(), platform.python_version()

    result = {
        "sum_of_squares": sc.parallelize(range(100_000), 8).map(lambda x: x * x).sum(),
        "executors": sorted(set(sc.parallelize(range(8), 8).mapPartitions(where).collect())),
        "master": sc.master,
        "app_id": sc.applicationId,
    }
    spark.stop()
    with open(output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
