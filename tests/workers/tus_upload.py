#!/usr/bin/env python3
"""Uploads a file to `rota serve` with tuspy, the tus project's Python client.

Usage:
  tus_upload.py SERVER FILE --token T --meta spec=S [--meta k=v]...
                [--chunk-size BYTES] [--stop-after CHUNKS] [--resume UPLOAD_URL]
                [--checksum]

Without --stop-after the whole file is sent. With it, the script stops after
that many chunks, as if interrupted. With --resume it continues an upload
from the offset the server reports (tuspy asks with HEAD). It prints one JSON
line: the upload's URL, the offset reached and the job id from the server's
answer to HEAD.
"""

import argparse
import json
import sys

import requests
from tusclient import client


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("server")
    p.add_argument("file")
    p.add_argument("--token", default=None)
    p.add_argument("--meta", action="append", default=[])
    p.add_argument("--chunk-size", type=int, default=1 << 20)
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--checksum", action="store_true")
    args = p.parse_args()

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    tus = client.TusClient(args.server.rstrip("/") + "/uploads", headers=headers)
    metadata = dict(m.split("=", 1) for m in args.meta)
    uploader = tus.uploader(
        args.file,
        url=args.resume,
        chunk_size=args.chunk_size,
        metadata=metadata,
        upload_checksum=args.checksum,
    )
    resumed_at = uploader.offset if args.resume else 0
    if args.stop_after is None:
        uploader.upload()
    else:
        for _ in range(args.stop_after):
            uploader.upload_chunk()
    head = requests.head(uploader.url, headers={**headers, "Tus-Resumable": "1.0.0"})
    print(
        json.dumps(
            {
                "url": uploader.url,
                "offset": uploader.offset,
                "resumed_at": resumed_at,
                "job": head.headers.get("Rota-Job-Id"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
