"""A change subscriber the tests kill -9: `python http_subscriber.py URL OUT [TOKEN]`.

Streams URL (GET /views/{name}/changes) and appends each line to OUT as it arrives, unbuffered,
so that what it has received is on disk whenever it dies. A non-200 answer is written as one
line `{"http_status": N, "body": ...}`.
"""

from __future__ import annotations

import json
import sys

import httpx


def main() -> None:
    url, out = sys.argv[1], sys.argv[2]
    headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
    timeout = httpx.Timeout(10, read=None)
    with (
        open(out, "ab", buffering=0) as f,
        httpx.stream("GET", url, headers=headers, timeout=timeout) as r,
    ):
        if r.status_code != 200:
            f.write(
                json.dumps({"http_status": r.status_code, "body": r.read().decode()}).encode()
                + b"\n"
            )
            sys.exit(2)
        for line in r.iter_lines():
            f.write(line.encode() + b"\n")


if __name__ == "__main__":
    main()
