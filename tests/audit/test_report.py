"""dmtwin audit report: one self-contained HTML file whose every chart has data."""

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from twin.audit import verify
from twin.htmlreport import render_report
from twin.whatif import Changes, measure, whatif

from .logs import chained, fleet

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


class Charts(HTMLParser):
    """Collects each chart's declared sample count, its polylines' point counts, and external refs."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "chart" in (a.get("class") or ""):
            self.charts.append({"points": int(a["data-points"]), "lines": []})
        elif tag == "polyline" and self.charts:
            self.charts[-1]["lines"].append(len((a.get("points") or "").split()))
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") and v and not v.startswith("#")
                                                               for k, v in attrs):
            self.external.append(tag)


@pytest.fixture(scope="module")
def report() -> str:
    lines = chained(fleet())
    return render_report(whatif(lines, Changes(policy="esx"), record=True, points=100), verify(lines), source="fleet")


def test_every_chart_has_data_points_and_nothing_is_fetched(report):
    parsed = Charts()
    parsed.feed(report)
    # per host: one chart; per VM: memory and pressure
    assert len(parsed.charts) == 2 * (1 + 2 * 2)
    for chart in parsed.charts:
        assert chart["points"] > 10 and chart["lines"] and all(n == chart["points"] for n in chart["lines"])
    assert parsed.external == []


def test_the_report_says_what_it_found(report):
    assert "Chain intact and every decision re-derived" in report
    assert "What if: policy esx" in report and "SimulatedGuest" in report
    assert report.count("<details>") == 4  # each VM's decisions
    assert "what-if assigned" in report


def test_long_runs_are_decimated():
    run = measure(chained(fleet(duration_s=900, hosts=("h1",))), record=True, points=50)
    series = run.actual.vm_series[("h1", "a")]
    assert 50 <= len(series.t) < 100 and series.stride > 1


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_it_renders_in_a_headless_browser(report, tmp_path):
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(report, encoding="utf-8")
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 1600) and len(data) > 20_000  # charts drawn, not a blank page
