"""The S3 the lake tests run against: moto's server (`moto[server]`, a dev dependency) with
its conditional writes made atomic, as S3's are.

delta-rs commits a Delta log version with `PutObject` + `If-None-Match: *`, so of two writers
committing the same version one gets 412 and retries. moto checks that header and then stores
the object in two steps while its server answers requests in threads: two writers could both
pass the check and the later object replace the earlier, a commit silently lost (seen in CI:
`test_two_writer_processes_on_one_s3_table` counted 5,800 of 6,000 rows, its 15 + 15 commits
all acknowledged). One lock around moto's PutObject makes check and write one step.

Run: `python -m tests.s3_server -H 127.0.0.1 -p PORT` (moto_server's arguments).
"""

from __future__ import annotations

import functools
import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_PUT = threading.Lock()
_put_object = S3Response.put_object


@functools.wraps(_put_object)
def _atomic_put_object(self: S3Response):
    with _PUT:
        return _put_object(self)


S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
