"""dmtwin whatif: the recorded inputs replayed with other settings, and compared with what happened."""

import pytest

from twin.scenario import Scenario
from twin.whatif import Changes, measure, parse_setting, whatif

from .logs import chained, fleet


def steady(maximum_mib: int = 4096, total_mib: int = 8192) -> list[str]:
    """One Windows guest needing 3000 MiB for a minute, from a Startup of 1024 MiB."""
    return chained(Scenario.model_validate({"seed": 1, "duration_s": 60, "hosts": [
        {"name": "h", "total_mib": total_mib, "reserve_mib": 1024, "vms": [
            {"name": "a", "startup_mib": 1024, "minimum_mib": 512, "maximum_mib": maximum_mib,
             "workload": {"kind": "steady", "mib": 3000, "noise_percent": 0}}]}]}))


def test_changing_nothing_reproduces_the_recorded_run_exactly():
    lines = chained(fleet(os="windows"))  # the simulated guests answer like the recorded ones did
    result = whatif(lines, Changes(), record=True)
    assert result.whatif is not None
    assert {k: u.as_dict() for k, u in result.actual.usage.items()} == \
        {k: u.as_dict() for k, u in result.whatif.usage.items()}
    strip = lambda ds: [(d.type, d.vm, d.seq, d.at_ms) for d in ds]
    assert {k: strip(v) for k, v in result.actual.decisions.items()} == \
        {k: strip(v) for k, v in result.whatif.decisions.items()}
    assert result.rejected_whatif == [] and result.rejected_actual == 0


def test_a_lower_maximum_keeps_the_vm_in_warning():
    result = whatif(steady(), Changes(settings={"a": {"maximum_mib": 2048}}))
    actual, what = result.actual.usage[("h", "a")], result.whatif.usage[("h", "a")]
    assert actual.running_s == what.running_s == 59.0  # 60 rounds, one second apart
    assert actual.warning_s == 0 and what.warning_s == 59.0  # 3000 MiB needed, 2048 allowed
    assert actual.average_mib == pytest.approx((3072 + 58 * 3600) / 59)  # 2048 then 528 more: the ideal
    assert what.average_mib == 2048 and what.add_ops == 1 and actual.add_ops == 2
    assert actual.saved_percent == pytest.approx(100 * (1 - actual.average_mib / 4096))
    assert any("SimulatedGuest" in note for note in result.notes)
    assert "a.maximum_mib=2048" in result.to_text()


def test_a_host_too_small_refuses_the_vm_and_says_so():
    result = whatif(steady(), Changes(host_mib=1536, reserve_mib=1024))
    assert result.whatif.usage.get(("h", "a")) is None
    assert result.rejected_whatif and "has only 512 MiB available" in result.rejected_whatif[0]


def test_another_policy_decides_in_the_what_if():
    result = whatif(chained(fleet(os="windows")), Changes(policy="squeezed"), record=True)
    reasons = {d.reason.split(":")[0] for ds in result.whatif.decisions.values() for d in ds if hasattr(d, "reason")}
    assert reasons == {"squeezed"}
    assert result.to_dict()["total"]["whatif"]["decisions"] != result.to_dict()["total"]["actual"]["decisions"]


def test_measure_only_the_recorded_run():
    result = measure(steady())
    assert result.whatif is None and result.actual.usage[("h", "a")].running_s == 59.0


@pytest.mark.parametrize("text, parsed", [("web.maximum_mib=8192", ("web", "maximum_mib", 8192)),
                                          ("*.hot_add=false", ("*", "hot_add", False)),
                                          ("db.01.weight=100", ("db.01", "weight", 100))])
def test_settings_parse(text, parsed):
    assert parse_setting(text) == parsed


@pytest.mark.parametrize("text", ["web.colour=red", "maximum_mib=1", "web.weight=heavy"])
def test_bad_settings_are_refused(text):
    with pytest.raises(ValueError, match="--set"):
        parse_setting(text)


def test_impossible_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="minimum_mib"):
        whatif(steady(), Changes(settings={"a": {"minimum_mib": 2048}}))  # above Startup


def test_every_policy_on_the_same_log_in_one_table():
    from twin.whatif import compare

    lines = chained(fleet(os="windows"))
    table = compare(lambda: iter(lines), ["hyperv", "squeezed", "mom", "esx"])
    names = [name for name, _ in table.rows]
    assert names == ["recorded", "hyperv", "squeezed", "mom", "esx"]
    recorded, hyperv = table.rows[0][1], table.rows[1][1]
    assert recorded == hyperv  # the recorded run was hyperv's, answered like the simulated guests do
    text = table.to_text()
    assert "Warning VM-h" in text and "mean GiB" in text and "E esx" in text
    runs = table.to_dict()["runs"]
    assert [r["run"] for r in runs] == names and set(runs[0]) >= {"warning_h", "low_h", "short_gib_h", "mean_gib",
                                                                  "peak_gib", "saved_percent", "operations"}


def test_dmtwins_own_policy_decides_in_the_what_if_and_is_in_the_table():
    from twin.whatif import WHATIF_POLICIES, compare

    lines = chained(fleet(os="windows"))
    result = whatif(lines, Changes(policy="foresight:price_mib=4096,hold=1"), record=True)
    reasons = {d.reason.split(":")[0] for ds in result.whatif.decisions.values() for d in ds if hasattr(d, "reason")}
    assert reasons == {"foresight"}
    assert result.rejected_whatif == []
    assert "foresight" in WHATIF_POLICIES
    table = compare(lambda: iter(lines), ["hyperv", "foresight"])
    assert [name for name, _ in table.rows] == ["recorded", "hyperv", "foresight"]
    with pytest.raises(ValueError, match="'nope': expected one of hyperv, squeezed, mom, esx, foresight"):
        Changes(policy="nope")
    with pytest.raises(ValueError, match="foresight parameter 'hlod': expected one of window, price_mib, hold"):
        Changes(policy="foresight:hlod=1")


def test_mom_rounds_every_ten_seconds_of_the_recorded_ticks():
    result = whatif(steady(), Changes(policy="mom"), record=True)
    rounds = result.whatif.host_series["h"].t
    assert all(b - a >= 10_000 for a, b in zip(rounds, rounds[1:]))


def test_the_html_report_shows_every_policy_and_the_plot():
    from twin.htmlreport import render_report
    from twin.whatif import compare, measure

    lines = chained(fleet(os="windows"))
    table = compare(lambda: iter(lines), ["hyperv", "mom"])
    html = render_report(measure(lines, record=True), comparison=table)
    assert "Every policy on this log" in html and ">mom</td>" in html
    # the recorded run was hyperv's: the two share one dot and one label, which do not overlap
    assert html.count("<circle") == 2 and ">recorded, hyperv</text>" in html
