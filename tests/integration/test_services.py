"""The services of `make ui`, for real, on loopback: the Prefect server, the MLflow server and the
deployments, started and stopped by PID through infra/services.py.

A flow run is created through the REST call the UI's Run button makes, runs to Completed, and its
metrics are found in MLflow; a bad parameter is refused at once with the field named; headless
Chromium opens the deployment page and MLflow's run comparison (screenshots kept as test
artifacts); every listening socket of the services is on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.runs import TINY_PARAMS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("KERNELSCOPE_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_launcher():
    spec = importlib.util.spec_from_file_location("kernelscope_services", ROOT / "infra" / "services.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def api(
    base: str, path: str, body: dict | None = None, method: str | None = None, tries: int = 10
) -> tuple[int, object]:
    """One REST call; 503 (a server busy on two cores, SQLite locked) is retried as a browser's user would."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(tries):
        request = urllib.request.Request(
            base + path,
            data=data,
            headers={"content-type": "application/json"},
            method=method or ("POST" if data else "GET"),
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == tries - 1:
                return error.code, error.read().decode()
        time.sleep(2.0)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("services")
    params = dict(TINY_PARAMS, outputs=str(tmp / "out"))
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    launcher = load_launcher()
    launcher.LOGS = tmp / "logs"
    env = {
        **os.environ,
        "KERNELSCOPE_HOST": "127.0.0.1",
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "PREFECT_HOME": str(tmp / "prefect"),
        "KERNELSCOPE_PARAMS": str(tmp / "params.yaml"),
        "KERNELSCOPE_MLFLOW_DB": str(tmp / "mlflow.db"),
        "KERNELSCOPE_MLFLOW_ARTIFACTS": str(tmp / "mlruns"),
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env = launcher.settings() | env
    started = launcher.start_all(env)
    pids = {name: info["pid"] for name, info in started.items()}
    prefect_url, mlflow_url = launcher.urls(env)
    try:
        yield {"prefect": prefect_url, "mlflow": mlflow_url, "pids": pids, "tmp": tmp, "logs": tmp / "logs"}
    finally:
        launcher.stop_all(pids)
        for name, pid in pids.items():
            assert not launcher._group_alive(pid), f"{name} (process group {pid}) survived stop_all"


def deployment(services, name: str, timeout: float = 90.0) -> dict:
    """The served deployment called ``name`` (serving registers them a few seconds after start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, found = api(services["prefect"], "/api/deployments/filter", {"deployments": {"name": {"any_": [name]}}})
        if status == 200 and found:
            return found[0]
        time.sleep(1.0)
    raise AssertionError(f"deployment {name} never registered; see {services['logs'] / 'flow-deployments.log'}")


def wait_final(services, flow_run_id: str, timeout: float = 400.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, run = api(services["prefect"], f"/api/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2.0)
    raise AssertionError(
        f"flow run {flow_run_id} did not finish in {timeout} s; see {services['logs'] / 'flow-deployments.log'}"
    )


@pytest.fixture(scope="module")
def completed_runs(services):
    """Two attribution runs started as the Run button starts them: the form's defaults, then one field edited."""
    dep = deployment(services, "attribution")
    ids = []
    for alpha in (None, 0.01):
        parameters = json.loads(json.dumps(dep["parameters"]))
        if alpha is not None:
            parameters["params"]["kglm"]["alpha"] = alpha
        status, run = api(
            services["prefect"], f"/api/deployments/{dep['id']}/create_flow_run", {"parameters": parameters}
        )
        assert status == 201, run
        final = wait_final(services, run["id"])
        assert final["state"]["type"] == "COMPLETED", final["state"]
        ids.append(run["id"])
    return dep, ids


def test_run_button_path_completes_and_lands_in_mlflow(services, completed_runs):
    dep, flow_run_ids = completed_runs
    assert (
        dep["parameters"]["params"]["kglm"]["alpha"] == TINY_PARAMS["kglm"]["alpha"]
    )  # the form's defaults are params.yaml's
    status, found = api(services["mlflow"], "/api/2.0/mlflow/experiments/get-by-name?experiment_name=attribution")
    assert status == 200, found
    experiment_id = found["experiment"]["experiment_id"]
    status, result = api(
        services["mlflow"],
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.source = 'prefect-deployment' and tags.kernel = 'trntk'"},
    )
    runs = result["runs"]
    assert len(runs) == 2
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert {"flow", "dataset", "kernel", "seed", "params_hash", "git_commit"} <= set(tags)
        assert tags["dataset"] == "digits2" and tags["seed"] == str(TINY_PARAMS["seed"])
        assert {m["key"] for m in run["data"]["metrics"]} >= {"tau_k", "tad", "kglm_accuracy"}
    # The run's logs in the UI carry the progress lines of its long loops (counts and rates).
    status, logs = api(
        services["prefect"], "/api/logs/filter", {"logs": {"flow_run_id": {"any_": flow_run_ids}}, "limit": 200}
    )
    progress = [entry["message"] for entry in logs if "kernel rows" in entry["message"]]
    assert progress and all("block/s" in line for line in progress), [entry["message"] for entry in logs][:20]
    # Editing a field in the form changes the params hash, so MLflow can tell the two runs apart.
    assert len({next(t["value"] for t in r["data"]["tags"] if t["key"] == "params_hash") for r in runs}) == 2


def test_bad_parameter_from_the_form_fails_at_once_naming_the_field(services):
    dep = deployment(services, "attribution")
    for path, value, field in (
        (("kglm", "alpha"), -1.0, "params.kglm.alpha"),
        (("kernel", "kinds"), ["trntk", "nope"], "params.kernel.kinds"),
        (("kglm", "alhpa"), 0.1, "alhpa"),
    ):
        parameters = json.loads(json.dumps(dep["parameters"]))
        parameters["params"][path[0]][path[1]] = value
        start = time.monotonic()
        status, body = api(
            services["prefect"], f"/api/deployments/{dep['id']}/create_flow_run", {"parameters": parameters}
        )
        assert status == 409 and field in body, (status, body)
        assert time.monotonic() - start < 10
    # An unknown top-level parameter (a typo of 'params') is refused too, not silently dropped.
    status, body = api(
        services["prefect"],
        f"/api/deployments/{dep['id']}/create_flow_run",
        {"parameters": {**dep["parameters"], "parms": {}}},
    )
    assert status == 409 and "'parms' was unexpected" in body, (status, body)


def test_every_service_listens_on_loopback_only(services):
    seen = 0
    for pid in services["pids"].values():
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    seen += 1
                    assert conn.laddr.ip in ("127.0.0.1", "::1"), (
                        f"{proc.name()} (pid {proc.pid}) listens on {conn.laddr.ip}"
                    )
    assert seen >= 2  # at least the Prefect and MLflow servers


def test_kernelscope_runs_compares_them(services, completed_runs):
    env = {**os.environ, "MLFLOW_TRACKING_URI": services["mlflow"]}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kernelscope.cli",
            "runs",
            "--experiment",
            "attribution",
            "--json",
            "--filter",
            "tags.kernel = 'trntk'",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 2 and all(r["source"] == "prefect-deployment" and "tau_k" in r["metrics"] for r in rows)
    table = subprocess.run(
        [sys.executable, "-m", "kernelscope.cli", "runs"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert table.returncode == 0 and "prefect-deployment" in table.stdout and "tau_k" in table.stdout


CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # no calls home: this machine's network is closed


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: `make test` installs it (make browser)."
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def render(browser, url: str, wait_for_text: str, shot: Path) -> str:
    """Open ``url``, wait until ``wait_for_text`` shows, save a full-page screenshot, return the page's text."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(url)
        page.get_by_text(wait_for_text).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the rest of the page settle before the picture
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        return page.inner_text("body")
    finally:
        page.close()


def test_browser_shows_deployment_form_and_mlflow_comparison(services, completed_runs, browser):
    dep, _ = completed_runs
    text = render(
        browser,
        f"{services['prefect']}/deployments/deployment/{dep['id']}",
        "Completed",
        ARTIFACTS / "prefect-deployment.png",
    )
    assert "attribution" in text and "kernelscope" in text
    # The Run form: one field per params.yaml entry, with its description, filled with the defaults.
    text = render(
        browser,
        f"{services['prefect']}/deployments/deployment/{dep['id']}/run",
        "Test Fraction",
        ARTIFACTS / "prefect-run-form.png",
    )
    assert "Fraction of each class held out for testing" in text and "Kernels a run computes" in text
    _, found = api(services["mlflow"], "/api/2.0/mlflow/experiments/get-by-name?experiment_name=attribution")
    experiment_id = found["experiment"]["experiment_id"]
    _, result = api(
        services["mlflow"],
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.kernel = 'trntk'"},
    )
    run_ids = [r["info"]["run_id"] for r in result["runs"]]
    url = (
        f"{services['mlflow']}/#/compare-runs?runs={json.dumps(run_ids)}&experiments={json.dumps([experiment_id])}"
    ).replace(" ", "")
    text = render(browser, url, "tau_k", ARTIFACTS / "mlflow-compare.png")
    assert "digits2-trntk" in text and "params_hash" in text


def test_artifacts_page_shows_the_flows_tables(services, completed_runs, browser):
    """The runs started from the Run button published their comparison table: on the REST API, and on the
    Artifacts page of the UI in headless Chromium."""
    key = "attribution-comparison-digits2"
    status, found = api(services["prefect"], "/api/artifacts/latest/filter", {"artifacts": {"key": {"any_": [key]}}})
    assert status == 200 and [a["type"] for a in found] == ["table"], found
    rows = json.loads(found[0]["data"])
    assert {row["kernel"] for row in rows} >= {"trntk"} and "τ_K" in rows[0]
    # The key's page: the newest table's title, and its history (one entry per flow run: both runs).
    text = render(browser, f"{services['prefect']}/artifacts/key/{key}", key, ARTIFACTS / "prefect-artifact-key.png")
    assert "digits2: kernel comparison" in text and text.count("Flow run") == 2, text[:2000]
    # The newest one: the table itself.
    url = f"{services['prefect']}/artifacts/artifact/{found[0]['latest_id']}"  # the collection names its newest
    text = render(browser, url, "trntk", ARTIFACTS / "prefect-artifact-table.png")
    assert "kGLM test acc" in text and "τ_K" in text, text[:2000]
