"""dmtwin audit report: one self-contained HTML file whose every chart has data."""

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from twin import __version__
from twin.audit import verify
from twin.htmlreport import Evidence, render_report
from twin.scenario import simulate
from twin.signing import CheckpointCheck, Signer, Trail
from twin.whatif import Changes, measure, whatif

from .logs import T0, chained, fleet

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


SIGNER = Signer(bytes(range(32)))
MADE_AT = 1_790_000_000_000  # the report's own time, from the caller's clock


@pytest.fixture(scope="module")
def report() -> str:
    trail, lines, checkpoints = Trail(SIGNER), [], []
    for event in simulate(fleet()):
        due, line = trail.line(event)
        checkpoints += due
        lines.append(line)
    checkpoints += trail.finish()
    checked = verify(lines, checkpoints=CheckpointCheck(SIGNER.public_key, checkpoints))
    evidence = Evidence(log_sha256="ab" * 32, first_ms=T0, last_ms=T0 + 119_500, generated_ms=MADE_AT,
                        key=checked.key, verdict=checked.verdict(), status=checked.status)
    return render_report(whatif(lines, Changes(policy="esx"), record=True, points=100), checked, source="fleet",
                         evidence=evidence)


def test_every_chart_has_data_points_and_nothing_is_fetched(report):
    parsed = Charts()
    parsed.feed(report)
    # per host: one chart; per VM: memory and pressure
    assert len(parsed.charts) == 2 * (1 + 2 * 2)
    for chart in parsed.charts:
        assert chart["points"] > 10 and chart["lines"] and all(n == chart["points"] for n in chart["lines"])
    assert parsed.external == []


def test_the_report_says_what_it_found(report):
    assert "OK: chain intact, signed by SHA256:" in report and "every decision re-derived" in report
    assert "What if: policy esx" in report and "SimulatedGuest" in report
    assert report.count("<details>") == 4  # each VM's decisions
    assert "what-if assigned" in report


def test_the_report_is_evidence_of_what_was_checked_and_when(report):
    evidence = report[report.index('<table class="evidence">'):report.index("<h2>Verification")]
    assert "ab" * 32 in evidence, "the log's sha256"
    assert "2026-01-01T00:00:00.000Z to 2026-01-01T00:01:59.500Z" in evidence, "first and last event time"
    assert SIGNER.public_key.short in evidence and SIGNER.fingerprint in evidence
    assert "Report made</th><td class=l>2026-09-21T14:13:20.000Z" in evidence
    assert f"dmtwin twin {__version__}" in evidence and "<b class=\"ok\">OK: " in evidence
    assert "2026-01-01 00:00:00</text>" in report and "UTC</text>" in report, "UTC on the axes"


def test_an_unsigned_report_says_so():
    lines = chained(fleet(duration_s=20))
    checked = verify(lines)
    evidence = Evidence(log_sha256="0" * 64, first_ms=T0, last_ms=T0, generated_ms=MADE_AT, key=None,
                        verdict=checked.verdict(), status=checked.status)
    page = render_report(measure(lines, record=True), checked, evidence=evidence)
    assert "none given: the signatures were not checked" in page and '<b class="bad">UNSIGNED: ' in page


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
