#!/usr/bin/env python3
"""The `mc` commands the compose stack uses, for the stand-in MinIO images.

    mc alias set ALIAS URL ACCESS_KEY SECRET_KEY
    mc mb [--ignore-existing|-p] ALIAS/BUCKET
    mc ready ALIAS

Aliases are kept in ~/.mc/config.json (MC_CONFIG_DIR), as mc keeps them. Anything else
exits 2, so a stack that starts relying on another mc command fails here too.
"""

import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

CONFIG = Path(os.environ.get("MC_CONFIG_DIR", Path.home() / ".mc")) / "config.json"


def aliases() -> dict:
    return json.loads(CONFIG.read_text())["aliases"] if CONFIG.is_file() else {}


def client(alias: str):
    from minio import Minio

    entry = aliases().get(alias)
    if entry is None:
        sys.exit(f"mc: <ERROR> no alias {alias!r}; set it with `mc alias set`")
    url = urlparse(entry["url"])
    return Minio(url.netloc, entry["accessKey"], entry["secretKey"], secure=url.scheme == "https")


def main(args: list[str]) -> int:
    if args[:2] == ["alias", "set"] and len(args) == 6:
        name, url, access, secret = args[2:]
        table = aliases()
        table[name] = {"url": url, "accessKey": access, "secretKey": secret, "api": "s3v4"}
        CONFIG.parent.mkdir(parents=True, exist_ok=True)
        CONFIG.write_text(json.dumps({"version": "10", "aliases": table}))
        client(name).list_buckets()  # mc checks the credentials when it sets an alias
        print(f"Added `{name}` successfully.")
        return 0
    if args[:1] == ["mb"]:
        flags = {a for a in args[1:] if a.startswith("-")}
        targets = [a for a in args[1:] if not a.startswith("-")]
        if len(targets) != 1 or "/" not in targets[0] or flags - {"--ignore-existing", "-p"}:
            return usage()
        alias, bucket = targets[0].split("/", 1)
        minio = client(alias)
        if minio.bucket_exists(bucket):
            if flags:
                print(f"Bucket `{targets[0]}` already exists.")
                return 0
            sys.exit(
                f"mc: <ERROR> Unable to make bucket `{targets[0]}`. Your previous request to create the named bucket succeeded and you already own it."
            )
        minio.make_bucket(bucket)
        print(f"Bucket created successfully `{targets[0]}`.")
        return 0
    if args[:1] == ["ready"] and len(args) == 2:
        entry = aliases().get(args[1])
        url = entry["url"] if entry else "http://localhost:9000"
        for _ in range(30):
            try:
                with urllib.request.urlopen(f"{url}/minio/health/ready", timeout=2):
                    print("The cluster is ready")
                    return 0
            except OSError:
                time.sleep(1)
        return 1
    return usage()


def usage() -> int:
    print("mc stand-in: only `alias set`, `mb [--ignore-existing]` and `ready`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
