"""twin/ is the pure core: no Kafka, Faust, Prometheus, network, clock or streams."""

import re
import subprocess
import sys
from pathlib import Path

TWIN = Path(__file__).resolve().parents[2] / "twin"


def test_twin_imports_no_infrastructure():
    code = (
        "import sys, pkgutil, importlib, twin\n"
        "for m in pkgutil.walk_packages(twin.__path__, 'twin.'): importlib.import_module(m.name)\n"
        "bad = [m for m in ('faust', 'aiokafka', 'kafka', 'prometheus_client', 'streams', 'aiohttp')"
        " if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_twin_reads_no_clock_and_opens_no_socket():
    forbidden = re.compile(r"^\s*(import|from)\s+(socket|time|asyncio|urllib|http)\b|datetime\.now|time\.time",
                           re.MULTILINE)
    offenders = [p.name for p in TWIN.glob("*.py") if forbidden.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
