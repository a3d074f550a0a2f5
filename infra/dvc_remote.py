"""`make push` / `make pull` / `make remote-status`: DVC's push, pull or status against the project's remote.

The project's default remote is the folder ~/.cache/kernelscope/dvc-remote (.dvc/config: remote 'local'), outside
every working tree and shared by every clone on the machine, so a fresh clone pushes and pulls with no set-up
and a second clone pulls what the first pushed. KERNELSCOPE_DVC_REMOTE names another one: a folder (relative
paths are taken from the working directory), or any URL DVC reads (s3://bucket/path with dvc-s3, ssh://...).
It is written to .dvc/config.local (never committed) as the remote 'env' and used for this call.

    python infra/dvc_remote.py push [dvc push options]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REMOTE_ENV = "KERNELSCOPE_DVC_REMOTE"
ACTIONS = ("push", "pull", "status")


def remote_url(value: str) -> str:
    """A URL as given; a folder as an absolute path (DVC would resolve a relative one against .dvc/)."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


def dvc_command(action: str, extra: list[str], environ: dict[str, str]) -> list[list[str]]:
    """The dvc calls for ``action``: with KERNELSCOPE_DVC_REMOTE set, first (re)point the remote 'env' at it."""
    dvc = [sys.executable, "-m", "dvc"]
    call = [*dvc, action, *(["--cloud"] if action == "status" else [])]
    value = environ.get(REMOTE_ENV, "").strip()
    if not value:
        return [[*call, *extra]]
    add = [*dvc, "remote", "add", "--local", "--force", "env", remote_url(value)]
    return [add, [*call, "--remote", "env", *extra]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ACTIONS:
        print(f"usage: python infra/dvc_remote.py {{{'|'.join(ACTIONS)}}} [dvc options]", file=sys.stderr)
        return 2
    for command in dvc_command(args[0], args[1:], dict(os.environ)):
        code = subprocess.call(command)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
