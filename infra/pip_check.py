"""`pip check`, allowing one documented gap: kronfluence declares torchvision, which it never imports, and no
torchvision on the registry loads beside the pinned CPU torch (STACK.md). Anything else pip reports fails."""

from __future__ import annotations

import subprocess
import sys

ALLOWED = ("kronfluence 1.0.1 requires torchvision, which is not installed.",)


def main() -> int:
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [line for line in done.stdout.splitlines() if line.strip() and line.strip() not in ALLOWED]
    problems = [line for line in problems if not line.startswith("No broken requirements")]
    if done.returncode != 0 and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    import kronfluence.analyzer  # noqa: F401  (the gap is harmless only while this import works)

    print("pip check: no broken requirements (kronfluence's unused torchvision aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
