"""The sandbox's moto server, with S3's PUT made atomic as on AWS.

moto's `PutObject` checks `If-None-Match`/`If-Match` and then stores the object in two steps: two
conditional creates of one key that arrive together both pass the check (seen with 8 threads: 2 won).
S3 itself applies each PUT atomically, and our claims and registry pointers rely on that, so every PUT
is serialized here. Run as `python -m mltp.sandbox.moto_server` with moto's own server arguments.
"""

import functools
import threading

from moto.s3.responses import S3Response

_one_put_at_a_time = threading.Lock()


def make_puts_atomic() -> None:
    """Serialize moto's `PutObject` handler (idempotent; applies to the in-process mock too)."""
    put_object = S3Response.put_object
    if getattr(put_object, "serialized", False):
        return

    @functools.wraps(put_object)
    def serialized_put_object(self):
        with _one_put_at_a_time:
            return put_object(self)

    serialized_put_object.serialized = True
    S3Response.put_object = serialized_put_object


def main() -> None:
    from moto.server import main as moto_main

    make_puts_atomic()
    moto_main()


if __name__ == "__main__":
    main()
