"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
the page loads without console errors, every panel shows the run's data, new iterations, samples
and rejected batches appear without a reload, and a screenshot is saved. A second dashboard
with a token over the same run answers the page with its login form, and after logging in with
it shows the run.

Chromium is installed by ``scripts/install_browser.sh`` (called by ``scripts/test.sh``, and
here when it is missing); when it cannot be installed this test fails, it does not skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from online_dt.dashboard import serve
from online_dt.launch.rundir import RunDir
from online_dt.replay.export import export_dataset
from tests.dashboard_run import ITERATIONS, evaluated_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "install_browser.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"cannot install chromium for the browser test:\n{proc.stderr[-2000:]}")
    return CHROMIUM


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A copy of the evaluated short real run (this module appends to it)."""
    run = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(evaluated_run(tmp_path_factory, embedded_model_dir), run, symlinks=True)
    return run


@pytest.fixture(scope="module")
def server(run_dir):
    handle = serve(run_dir, port=0, poll_interval_s=0.25, recent_samples=20)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def browser_page(chromium, server):
    from playwright.sync_api import sync_playwright

    problems: list[str] = []

    def on_console(message) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    with (
        tempfile.TemporaryDirectory(prefix="online-dt-chromium-") as profile,
        sync_playwright() as p,
    ):
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(server.url)
        yield page, problems
        context.close()


def wait_for(page, expression: str, timeout: float = 20.0):
    """Poll a JavaScript expression until it is truthy (the page's CSP forbids Playwright's
    own eval-based wait_for_function); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {expression} (last: {value!r})")
        time.sleep(0.1)


def chart(page, name: str) -> dict:
    """Labels and datasets of one Chart.js chart on the page."""
    return page.evaluate(
        f"""(() => {{
            const c = Chart.getChart('chart-{name}');
            return {{labels: c.data.labels,
                     datasets: c.data.datasets.map(d => ({{label: d.label, data: d.data}}))}};
        }})()"""
    )


def ys(dataset: dict) -> list:
    return [p["y"] for p in dataset["data"]]


def test_every_panel_shows_the_run(browser_page, run_dir):
    page, problems = browser_page
    metrics = RunDir(run_dir).read_metrics()
    wait_for(page, f"document.body.dataset.iterations === '{ITERATIONS}'")
    wait_for(page, "Number(document.body.dataset.polls || 0) >= 1")
    wait_for(page, "document.querySelectorAll('#eval-table tbody tr').length > 0")

    # status
    assert page.inner_text("#run-name") == "run"
    assert page.inner_text("#st-state") == "finished"
    assert page.inner_text("#st-iteration") == f"{ITERATIONS} / {ITERATIONS}"
    assert page.inner_text("#st-version") == str(metrics[-1]["policy_version"])
    assert page.inner_text("#st-buffer") == str(metrics[-1]["buffer_size"])
    assert page.inner_text("#st-target") == f"{metrics[-1]['target']:.3f}"
    assert page.inner_text("#st-checkpoint") == f"iter-{ITERATIONS - 1:06d}"
    assert page.inner_text("#st-warm-start") == "–"  # this run has none
    warm = {"samples": 448, "prompts": 32, "steps": 10, "loss": 1.5, "wall_s": 2.71}
    (run_dir / "warm_start.json").write_text(json.dumps(warm))
    try:  # the next poll shows it
        shown = "document.getElementById('st-warm-start').textContent"
        wait_for(page, f"{shown} === '448 samples, 10 steps, 2.7 s'")
    finally:
        (run_dir / "warm_start.json").unlink()
    assert page.inner_text("#errors-summary") == "none"
    summary = page.inner_text("#config-summary")
    assert "schedule" in summary and "quantile" in summary and "8 x 2" in summary

    # the schedule: target, achieved mean and the p10-p90 band per iteration
    schedule = chart(page, "schedule")["datasets"]
    assert ys(schedule[3]) == pytest.approx([m["target"] for m in metrics])
    assert ys(schedule[2]) == pytest.approx([m["achieved_mean"] for m in metrics])
    assert ys(schedule[0]) == pytest.approx([m["achieved_p10"] for m in metrics])
    assert ys(schedule[1]) == pytest.approx([m["achieved_p90"] for m in metrics])
    assert [p["x"] for p in schedule[3]["data"]] == list(range(ITERATIONS))
    assert schedule[4]["data"] == []  # no best command in this run

    # calibration: achieved vs target per iteration, the identity line, the evaluation
    report = json.loads((run_dir / "eval" / "calibration.json").read_text())
    calibration = chart(page, "calibration")["datasets"]
    assert [p["x"] for p in calibration[0]["data"]] == pytest.approx([m["target"] for m in metrics])
    assert ys(calibration[0]) == pytest.approx([m["achieved_mean"] for m in metrics])
    identity = calibration[1]["data"]
    assert len(identity) == 2 and all(p["x"] == p["y"] for p in identity)
    assert [p["x"] for p in calibration[2]["data"]] == pytest.approx(
        [r["target"] for r in report["rows"]]
    )
    assert ys(calibration[2]) == pytest.approx([r["mean"] for r in report["rows"]])

    # reward vs KL to the base: iterations, the evaluation's targets, the base's own reference
    wait_for(page, "Chart.getChart('chart-klplane').data.datasets[1].data.length > 0")
    plane = chart(page, "klplane")["datasets"]
    assert [p["x"] for p in plane[0]["data"]] == pytest.approx([m["kl_to_base"] for m in metrics])
    assert ys(plane[0]) == pytest.approx([m["achieved_mean"] for m in metrics])
    assert [p["x"] for p in plane[1]["data"]] == pytest.approx(
        [r["kl_to_base"] for r in report["rows"]]
    )
    assert ys(plane[1]) == pytest.approx([r["mean"] for r in report["rows"]])
    ref = report["reference"]
    kept = [b for b in ref["grid"] if b["count"] >= ref["min_count"]]
    assert len(kept) >= 3 and plane[2]["label"].startswith("base model's own reference")
    assert [p["x"] for p in plane[2]["data"]] == pytest.approx(
        [b["kl_ideal_lower_bound"] for b in kept]
    )
    assert ys(plane[2]) == pytest.approx([b["reward_mean"] for b in kept])
    assert f"reference: {ref['samples']} base samples" in page.inner_text("#klplane-summary")

    # the buffer histogram, now and at an earlier iteration chosen with the slider
    data = export_dataset(run_dir / "buffer")
    buffer = chart(page, "buffer")
    assert len(buffer["labels"]) == 30
    assert sum(buffer["datasets"][1]["data"]) == len(data) == metrics[-1]["buffer_size"]
    assert sum(buffer["datasets"][0]["data"]) == len(data)
    page.evaluate(
        """(() => { const s = document.getElementById('buffer-iteration');
                    s.value = '0'; s.dispatchEvent(new Event('input')); })()"""
    )
    first = data["iteration"].count(0)
    wait_for(
        page,
        "Chart.getChart('chart-buffer').data.datasets[0].data.reduce((a, b) => a + b, 0)"
        f" === {first}",
    )
    assert page.inner_text("#buffer-at") == "0"
    assert not page.is_visible("#buffer-error")
    assert chart(page, "buffer")["datasets"][0]["label"] == "up to iteration 0"

    # diversity and KL
    diversity = chart(page, "diversity")["datasets"]
    assert ys(diversity[0]) == pytest.approx([m["distinct_1"] for m in metrics])
    assert ys(diversity[1]) == pytest.approx([m["distinct_2"] for m in metrics])
    assert ys(diversity[2]) == pytest.approx([m["kl_to_base"] for m in metrics])

    # throughput and the time per stage
    throughput = chart(page, "throughput")
    assert throughput["labels"] == list(range(ITERATIONS))
    stages = ["rollout_s", "scoring_s", "training_s", "sync_s", "other_s", "samples_per_s"]
    for dataset, key in zip(throughput["datasets"], stages, strict=True):
        assert dataset["data"] == pytest.approx([m[key] for m in metrics]), key

    # recent samples, newest first
    logged = [json.loads(line) for line in RunDir(run_dir).samples_file.read_text().splitlines()]
    rows = page.query_selector_all("#samples-table tbody tr")
    assert len(rows) == min(20, len(logged))
    cells = [c.inner_text() for c in rows[0].query_selector_all("td")]
    newest = logged[-1]
    assert cells[0] == str(newest["iteration"]) and cells[1] == newest["prompt"].strip()
    assert cells[2] == newest["completion"].strip()
    assert cells[3] == f"{newest['target']:.3f}" and cells[4] == f"{newest['achieved_reward']:.3f}"

    # the latest evaluation: table (extrapolation marked) and plot
    eval_rows = page.query_selector_all("#eval-table tbody tr")
    assert len(eval_rows) == len(report["rows"])
    flagged = [r.get_attribute("class") == "extrapolation" for r in eval_rows]
    assert flagged == [r["extrapolation"] for r in report["rows"]] and flagged[-1]
    assert eval_rows[0].query_selector("td").inner_text() == f"{report['rows'][0]['target']:.3f}"
    wait_for(page, "document.getElementById('eval-plot').naturalWidth === 1000")
    assert page.is_visible("#eval-plot")
    assert problems == []


def test_new_data_appears_without_reload(browser_page, run_dir):
    page, problems = browser_page
    page.evaluate("window.__sameDocument = true")
    run = RunDir(run_dir)
    last = run.read_metrics()[-1]
    new = {**last, "iteration": ITERATIONS, "target": 0.777, "achieved_mean": 0.555}
    new["best_achieved_mean"] = 0.912  # as a run with conditioning.best_command logs
    new["policy_version"] = last["policy_version"] + 1
    # a concurrent writer: half a line first (ignored), then the rest
    text = json.dumps(new) + "\n"
    with open(run.metrics_file, "a") as f:
        f.write(text[:40])
        f.flush()
        time.sleep(0.6)
        assert page.evaluate("document.body.dataset.iterations") == str(ITERATIONS)
        f.write(text[40:])
    wait_for(page, f"document.body.dataset.iterations === '{ITERATIONS + 1}'")
    schedule = chart(page, "schedule")["datasets"]
    assert ys(schedule[3])[-1] == pytest.approx(0.777)
    assert ys(schedule[2])[-1] == pytest.approx(0.555)
    assert ys(schedule[4]) == pytest.approx([0.912])  # the best command's, where it was logged
    wait_for(
        page, f"Chart.getChart('chart-klplane').data.datasets[0].data.length === {ITERATIONS + 1}"
    )
    newest = chart(page, "klplane")["datasets"][0]["data"][-1]
    assert (newest["x"], newest["y"]) == (pytest.approx(new["kl_to_base"]), pytest.approx(0.555))
    wait_for(
        page, f"document.getElementById('st-version').textContent === '{new['policy_version']}'"
    )
    assert page.inner_text("#st-iteration") == f"{ITERATIONS + 1} / {ITERATIONS}"

    # a logged sample with markup is shown as text, never run
    hostile = '<img src=x onerror="window.__xss = 1"> <b>not bold</b>'
    run.append_samples(
        [
            {
                "iteration": ITERATIONS,
                "prompt": "The movie was",
                "completion": hostile,
                "target": 0.777,
                "achieved_reward": 0.5,
                "policy_version": new["policy_version"],
            }
        ]
    )
    wait_for(
        page,
        "document.querySelector('#samples-table tbody tr td:nth-child(3)').textContent"
        f" === {json.dumps(hostile)}",
    )
    assert page.evaluate("window.__xss === undefined")
    assert page.query_selector("#samples-table img") is None

    # a rejected reward batch shows up in the errors panel
    (run_dir / "rejected").mkdir(exist_ok=True)
    (run_dir / "rejected" / "batch-000004.json").write_text(
        json.dumps({"reason": "reward model returned NaN for 3 samples", "iteration": 4})
    )
    wait_for(page, "document.getElementById('errors-summary').textContent.includes('1 rejected')")
    assert "returned NaN for 3 samples" in page.inner_text("#errors-list")
    assert page.evaluate("window.__sameDocument === true")  # no reload happened
    assert problems == []


def test_screenshot(browser_page):
    page, problems = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    print(f"dashboard screenshot: {path}")
    assert problems == []


def test_token_login_then_the_page_shows_the_run(browser_page, run_dir):
    """A dashboard with a token: the page asks for it (401 and the login form, no data), the
    form logs in with an HttpOnly cookie, and the page then shows the run from its API."""
    page, _ = browser_page
    token = "browser-" + "Qw3rTy9u" * 4
    handle = serve(run_dir, port=0, poll_interval_s=0.25, recent_samples=20, token=token)
    tab = page.context.new_page()
    problems: list[str] = []
    try:
        response = tab.goto(handle.url)
        assert response.status == 401
        assert tab.query_selector("#chart-schedule") is None  # the form, not the page
        assert tab.query_selector("form input[name=token]") is not None
        tab.fill("input[name=token]", token)
        with tab.expect_navigation():
            tab.click("button[type=submit]")
        # listen from here on: the 401 before logging in is expected
        tab.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        assert tab.url == handle.url  # no token in the address bar
        cookies = [c for c in page.context.cookies(handle.url) if c["name"].startswith("online_dt")]
        assert len(cookies) == 1 and cookies[0]["httpOnly"] and token not in cookies[0]["value"]
        assert tab.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts
        metrics = RunDir(run_dir).read_metrics()
        wait_for(tab, f"document.body.dataset.iterations === '{len(metrics)}'")
        wait_for(tab, "document.querySelectorAll('#eval-table tbody tr').length > 0")
        wait_for(tab, "document.getElementById('eval-plot').naturalWidth === 1000")
        assert tab.inner_text("#run-name") == "run"
        assert tab.inner_text("#st-version") == str(metrics[-1]["policy_version"])
        schedule = chart(tab, "schedule")["datasets"]
        assert ys(schedule[3]) == pytest.approx([m["target"] for m in metrics])
        assert len(tab.query_selector_all("#samples-table tbody tr")) > 0
        assert problems == []
    finally:
        tab.close()
        handle.stop()
