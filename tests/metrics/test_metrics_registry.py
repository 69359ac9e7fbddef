"""SPEC E6: the counters registry, its bounded labels and the Prometheus text format 0.0.4."""

from __future__ import annotations

import re
import threading

import pytest

from leaks import assert_no_leak
from teams_ehr import metrics
from teams_ehr.errors import (
    FhirUnavailableError,
    JoinLinkInvalidError,
    StateInvalidError,
    UsageError,
)
from teams_ehr.metrics import (
    OTHER,
    LabelRule,
    MetricsRegistry,
    StandardMetrics,
    observe_launch,
    outcome_of,
)

# One sample line of the 0.0.4 text format: name, optional {k="v",...}, a float.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.e+]+|NaN|[+-]Inf)$"
)


def _value(std: StandardMetrics, name: str, **labels: str) -> float:
    family = {f.name: f for f in std.registry.families()}[name]
    return family.value(**labels)


def test_standard_metrics_are_registered_with_their_labels() -> None:
    std = StandardMetrics()
    snap = std.registry.snapshot()
    assert set(snap) == {
        "teams_ehr_launches_total",
        "teams_ehr_meetings_total",
        "teams_ehr_security_refusals_total",
        "teams_ehr_outbox_depth",
        "teams_ehr_dead_letters_total",
        "teams_ehr_dead_letter_reasons_total",
        "teams_ehr_notifications_total",
        "teams_ehr_subscription_setups_total",
        "teams_ehr_subscription_setup_failures_total",
        "teams_ehr_subscription_setup_depth",
    }
    assert snap["teams_ehr_outbox_depth"]["type"] == "gauge"
    assert std.launches.label_names == ("stage", "outcome")
    # An unlabelled counter exists (at 0) before anything happens.
    assert snap["teams_ehr_dead_letters_total"]["samples"] == [{"labels": {}, "value": 0.0}]


def test_record_functions_count_into_the_given_metrics() -> None:
    std = StandardMetrics()
    metrics.record_launch("begin", "ok", metrics=std)
    metrics.record_launch("begin", "ok", metrics=std)
    metrics.record_meeting("remote_error", metrics=std)
    metrics.record_dead_letter(3, metrics=std)
    metrics.record_notification("accepted", 10, metrics=std)
    metrics.record_security_refusal("launch_replayed", metrics=std)
    metrics.record_security_refusal("token_invalid", 5, metrics=std)
    assert _value(std, "teams_ehr_launches_total", stage="begin", outcome="ok") == 2
    assert _value(std, "teams_ehr_meetings_total", outcome="remote_error") == 1
    assert _value(std, "teams_ehr_dead_letters_total") == 3
    assert _value(std, "teams_ehr_notifications_total", outcome="accepted") == 10
    assert _value(std, "teams_ehr_security_refusals_total", reason="launch_replayed") == 1
    assert _value(std, "teams_ehr_security_refusals_total", reason="token_invalid") == 5
    # The default registry was not touched by calls that named another one.
    assert metrics.DEFAULT is not std


def test_values_outside_a_fixed_set_become_other() -> None:
    std = StandardMetrics()
    metrics.record_launch("Practitioner/123", "ok", metrics=std)
    metrics.record_notification("patient-42", metrics=std)
    samples = std.launches.samples()
    assert samples == [({"stage": OTHER, "outcome": "ok"}, 1.0)]
    assert std.notifications.samples() == [({"outcome": OTHER}, 1.0)]


def test_pattern_labels_are_sanitized_and_capped() -> None:
    registry = MetricsRegistry()
    refusals = registry.counter("x_total", "x", reason=LabelRule.code(max_values=3))
    for reason in ("a_one", "b_two", "c_three", "d_four", "e_five"):
        refusals.inc(reason=reason)
    refusals.inc(reason="a_one")
    refusals.inc(reason='Bad "value"\nwith newline')  # not a code: never stored as is
    refusals.inc(reason="x" * 65)  # too long for a code
    values = {labels["reason"]: value for labels, value in refusals.samples()}
    assert values == {"a_one": 2.0, "b_two": 1.0, "c_three": 1.0, OTHER: 4.0}


def test_org_id_rule_bounds_cardinality() -> None:
    registry = MetricsRegistry()
    per_org = registry.counter("per_org_total", "x", org=LabelRule.org_id(max_values=2))
    for org in ("clinic-a", "clinic-b", "clinic-c", "not an id!"):
        per_org.inc(org=org)
    assert {labels["org"] for labels, _ in per_org.samples()} == {"clinic-a", "clinic-b", OTHER}


@pytest.mark.parametrize("label", ["user", "patient_id", "token", "join_url", "Subject"])
def test_identifier_label_names_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        MetricsRegistry().counter("x_total", "x", **{label: LabelRule.code()})


def test_wrong_label_set_and_bad_names_are_refused() -> None:
    std = StandardMetrics()
    with pytest.raises(ValueError, match="takes labels"):
        std.launches.inc(stage="begin")
    with pytest.raises(ValueError, match="only goes up"):
        std.dead_letters.inc(-1)
    registry = MetricsRegistry()
    with pytest.raises(ValueError, match="metric name"):
        registry.counter("bad-name", "x")
    with pytest.raises(ValueError, match="label name"):
        registry.counter("ok_total", "x", __reserved=LabelRule.code())
    registry.counter("ok_total", "x")
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("ok_total", "x")


def test_prometheus_text_format() -> None:
    registry = MetricsRegistry()
    hits = registry.counter(
        "hits_total", 'Hits with "quotes", a \\ and\na newline.', kind=LabelRule.one_of('a"b\\c\n')
    )
    hits.inc(kind='a"b\\c\n')
    hits.inc(0.5, kind='a"b\\c\n')
    registry.gauge("temperature", "A gauge.", callback=lambda: {(): float("-inf")})
    text = registry.render_prometheus()
    assert text.endswith("\n")
    assert text.splitlines() == [
        '# HELP hits_total Hits with "quotes", a \\\\ and\\na newline.',
        "# TYPE hits_total counter",
        'hits_total{kind="a\\"b\\\\c\\n"} 1.5',
        "# HELP temperature A gauge.",
        "# TYPE temperature gauge",
        "temperature -Inf",
    ]
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line


def test_standard_rendering_is_valid_exposition() -> None:
    std = StandardMetrics()
    metrics.record_launch("ehr_callback", "refused", metrics=std)
    metrics.record_security_refusal("state_unknown", metrics=std)
    text = metrics.render_prometheus(std)
    assert 'teams_ehr_launches_total{stage="ehr_callback",outcome="refused"} 1' in text
    assert "# TYPE teams_ehr_outbox_depth gauge" in text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert metrics.PROMETHEUS_CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_outcome_of_maps_the_error_hierarchy() -> None:
    assert outcome_of(None) == "ok"
    assert outcome_of(StateInvalidError()) == "refused"
    assert outcome_of(FhirUnavailableError()) == "remote_error"
    assert outcome_of(UsageError()) == "error"
    assert outcome_of(RuntimeError()) == "error"


def test_observe_launch_counts_success_refusal_and_error() -> None:
    std = StandardMetrics()
    with observe_launch("begin", metrics=std):
        pass
    with (
        pytest.raises(JoinLinkInvalidError),
        observe_launch("patient_join", metrics=std),
    ):
        raise JoinLinkInvalidError("unknown link", reason="join_link_unknown")
    with pytest.raises(FhirUnavailableError), observe_launch("ehr_callback", metrics=std):
        raise FhirUnavailableError()
    assert _value(std, "teams_ehr_launches_total", stage="begin", outcome="ok") == 1
    assert _value(std, "teams_ehr_launches_total", stage="patient_join", outcome="refused") == 1
    assert (
        _value(std, "teams_ehr_launches_total", stage="ehr_callback", outcome="remote_error") == 1
    )
    assert _value(std, "teams_ehr_security_refusals_total", reason="join_link_unknown") == 1


def test_counters_are_thread_safe() -> None:
    std = StandardMetrics()

    def work() -> None:
        for _ in range(2000):
            metrics.record_launch("begin", "ok", metrics=std)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _value(std, "teams_ehr_launches_total", stage="begin", outcome="ok") == 8000


def test_snapshot_is_plain_data() -> None:
    std = StandardMetrics()
    metrics.record_meeting("ok", metrics=std)
    snap = metrics.snapshot(std)
    assert snap["teams_ehr_meetings_total"] == {
        "type": "counter",
        "help": "Meetings created or got, by outcome.",
        "samples": [{"labels": {"outcome": "ok"}, "value": 1.0}],
    }


def test_identifiers_passed_as_label_values_never_reach_the_output() -> None:
    std = StandardMetrics()
    canaries = ["patient-canary-8675309", "Practitioner/canary-e1", "eyJcanary.token.value"]
    for canary in canaries:
        metrics.record_launch(canary, canary, metrics=std)
        metrics.record_meeting(canary, metrics=std)
        metrics.record_security_refusal(canary, metrics=std)
        metrics.record_notification(canary, metrics=std)
    assert_no_leak(canaries, metrics.render_prometheus(std), metrics.snapshot(std))
