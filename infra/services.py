"""Start and stop kernelscope's services: the Prefect server, the MLflow tracking server and the
process that serves every flow as a Prefect deployment.

    python infra/services.py up            start all three, print the URLs, stop them all on Ctrl-C
    python infra/services.py up --detach   start them in the background (state in .run/services.json)
    python infra/services.py down          stop services started with --detach
    python infra/services.py status        what is running, and where

Settings come from infra/kernelscope.env (the environment wins). Everything binds to
KERNELSCOPE_HOST, 127.0.0.1 unless you change it. Each service runs in its own process group,
so stopping one also stops the helper processes it started (MLflow's workers, flow runs).
This file is not imported by the library.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / "infra" / "kernelscope.env"
RUN_DIR = Path(os.environ.get("KERNELSCOPE_RUN_DIR", ROOT / ".run"))
STATE = RUN_DIR / "services.json"
LOGS = RUN_DIR / "logs"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' starts a comment; relative paths in values stay relative to the project root."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise SystemExit(
                f"{path}:{number}: expected KEY=VALUE, got {line!r}; fix the line or comment it out with '#'."
            )
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def settings() -> dict[str, str]:
    env = {**read_env_file(ENV_FILE), **{k: v for k, v in os.environ.items()}}
    env.setdefault("KERNELSCOPE_HOST", "127.0.0.1")
    env.setdefault("PREFECT_PORT", "4200")
    env.setdefault("MLFLOW_PORT", "5000")
    env["PREFECT_HOME"] = str(
        ROOT / env.get("PREFECT_HOME", ".prefect")
    )  # relative to the project root; an absolute path stays
    return env


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health: str  # URL answering 200 once the service is up ("" for none)
    env: dict[str, str]


def services(env: dict[str, str]) -> list[Service]:
    host, prefect_port, mlflow_port = env["KERNELSCOPE_HOST"], env["PREFECT_PORT"], env["MLFLOW_PORT"]
    bin_dir = Path(sys.executable).parent
    prefect_url = f"http://{host}:{prefect_port}"
    mlflow_url = f"http://{host}:{mlflow_port}"
    db = Path(env.get("KERNELSCOPE_MLFLOW_DB", ROOT / "mlflow.db"))
    artifacts = Path(
        env.get("KERNELSCOPE_MLFLOW_ARTIFACTS", ROOT / "mlruns")
    )  # where runs logged straight to the SQLite store put theirs
    common = {
        **env,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{Path(env['PREFECT_HOME']) / 'server.db'}",
    }
    client = {**common, "PREFECT_API_URL": f"{prefect_url}/api", "MLFLOW_TRACKING_URI": mlflow_url}
    # The UI asks the server where its API is: tell it, or it points the browser at the default port.
    server = {
        **common,
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": prefect_port,
        "PREFECT_UI_API_URL": f"{prefect_url}/api",
    }
    return [
        Service(
            "prefect-server",
            [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", prefect_port],
            f"{prefect_url}/api/health",
            server,
        ),
        # Artifacts are files under mlruns/, written by the clients themselves, so runs logged through
        # the server and runs logged straight to mlflow.db (dvc repro, the CLI) read back the same way.
        Service(
            "mlflow-server",
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                host,
                "--port",
                mlflow_port,
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{db}",
                "--default-artifact-root",
                str(artifacts),
                "--no-serve-artifacts",
            ],
            f"{mlflow_url}/health",
            common,
        ),
        Service(
            "flow-deployments",
            [sys.executable, "-m", "flows.serve", "--params", env.get("KERNELSCOPE_PARAMS", "params.yaml")],
            "",
            client,
        ),
    ]


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not healthy at {url} after {timeout:.0f} s")


def start_all(env: dict[str, str], timeout: float = 120.0) -> dict[str, dict]:
    LOGS.mkdir(parents=True, exist_ok=True)
    started: dict[str, dict] = {}
    try:
        for service in services(env):
            log = open(LOGS / f"{service.name}.log", "ab")
            proc = subprocess.Popen(
                service.command,
                cwd=ROOT,
                env=service.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            started[service.name] = {"pid": proc.pid, "log": str(LOGS / f"{service.name}.log"), "proc": proc}
            if service.health:
                try:
                    wait_healthy(service.health, timeout, proc)
                except RuntimeError as error:
                    raise SystemExit(f"{service.name}: {error}; see {LOGS / (service.name + '.log')}") from None
            print(f"  {service.name} started (pid {proc.pid}, log {LOGS / (service.name + '.log')})", flush=True)
    except BaseException:
        stop_all({name: info["pid"] for name, info in started.items()})
        raise
    return started


def stop_all(pids: dict[str, int], grace: float = 20.0) -> None:
    """Deployments first (they report to the Prefect server), then the servers; SIGINT, then SIGTERM, then SIGKILL."""
    order = [name for name in ("flow-deployments", "mlflow-server", "prefect-server") if name in pids]
    for name in order:
        pgid = pids[name]
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        print(f"  {name} stopped", flush=True)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (reaping the leader first if it is our own exited child)."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (started by an earlier `up --detach`): init reaps it
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def urls(env: dict[str, str]) -> tuple[str, str]:
    host = env["KERNELSCOPE_HOST"]
    return f"http://{host}:{env['PREFECT_PORT']}", f"http://{host}:{env['MLFLOW_PORT']}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(detach: bool) -> int:
    if STATE.exists():
        print(f"services already started ({STATE}); run `make ui-stop` first.", file=sys.stderr)
        return 1
    env = settings()
    prefect_url, mlflow_url = urls(env)
    print("Starting kernelscope services ...", flush=True)
    started = start_all(env)
    pids = {name: info["pid"] for name, info in started.items()}
    print(
        f"\nPrefect UI:  {prefect_url}   (Deployments → pick a flow → Run)\nMLflow UI:   {mlflow_url}\n"
        f"Send CLI runs to them too:  export PREFECT_API_URL={prefect_url}/api MLFLOW_TRACKING_URI={mlflow_url}",
        flush=True,
    )
    if detach:
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps({"pids": pids, "prefect_url": prefect_url, "mlflow_url": mlflow_url}, indent=1))
        print("Running in the background; stop with `make ui-stop`.")
        return 0
    print("Press Ctrl-C to stop them all.", flush=True)
    # Ctrl-C (SIGINT) or a process manager's SIGTERM: stop everything. SIGINT is set explicitly
    # because a shell that starts us in the background hands it down ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            for name, info in started.items():
                if info["proc"].poll() is not None:
                    print(
                        f"{name} exited with code {info['proc'].returncode}; see {info['log']}. Stopping the rest.",
                        file=sys.stderr,
                    )
                    raise KeyboardInterrupt
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half the services behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(pids)
    return 0


def background_state() -> dict | None:
    """What `up --detach` recorded, or None (with a message) when nothing was started that way."""
    if not STATE.exists():
        print(f"no services started in the background (no {STATE}).")
        return None
    return json.loads(STATE.read_text())


def cmd_down() -> int:
    state = background_state()
    if state is None:
        return 0
    stop_all(state["pids"])
    STATE.unlink()
    return 0


def cmd_status() -> int:
    state = background_state()
    if state is None:
        return 0
    for name, pid in state["pids"].items():
        print(f"{name:18s} pid {pid:<8d} {'running' if _group_alive(pid) else 'stopped'}")
    print(f"Prefect UI: {state['prefect_url']}\nMLflow UI:  {state['mlflow_url']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start and stop the Prefect server, the MLflow server and the flow deployments."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything; Ctrl-C stops everything")
    up.add_argument("--detach", action="store_true", help="start in the background; stop later with `down`")
    sub.add_parser("down", help="stop services started with --detach")
    sub.add_parser("status", help="show what runs where")
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_up(args.detach)
    return cmd_down() if args.command == "down" else cmd_status()


if __name__ == "__main__":
    sys.exit(main())
