"""E6: a visit through the host moves the standard counters; nothing identifying reaches them."""

from __future__ import annotations

from hosts.contract import ORG
from hosts.drivers import starlette_app, starlette_host
from teams_ehr import metrics
from teams_ehr.app import TeamsEhr
from teams_ehr.testing.sandbox import PRACTITIONER, Sandbox


def _launches(stage: str, outcome: str) -> float:
    return metrics.DEFAULT.launches.value(stage=stage, outcome=outcome)


def test_launch_meeting_and_refusal_counters_move() -> None:
    sandbox = Sandbox()
    sandbox.seed_appointment("appt-m1")
    before_ok = _launches("begin", "ok")
    before_refused = _launches("begin", "refused")
    before_meetings = metrics.DEFAULT.meetings.value(outcome="ok")
    with starlette_host(sandbox.app(), starlette_app) as driver:
        driver.run(sandbox.seed_organization, driver.runtime)
        launch = sandbox.provider_launch("appt-m1")
        assert (
            driver.get(
                f"/launch/{ORG}/test", {"iss": sandbox.ehr.base_url, "launch": launch}
            ).status
            == 302
        )
        assert (
            driver.get(
                f"/launch/{ORG}/test", {"iss": "https://evil.test/fhir", "launch": "x"}
            ).status
            == 400
        )
        driver.run(_prepare, driver.runtime, sandbox)
        text = driver.run(driver.runtime.metrics_text)
    assert _launches("begin", "ok") == before_ok + 1
    assert _launches("begin", "refused") == before_refused + 1
    assert metrics.DEFAULT.meetings.value(outcome="ok") == before_meetings + 1
    assert 'teams_ehr_security_refusals_total{reason="untrusted_issuer"}' in text
    assert "teams_ehr_outbox_depth" in text
    assert "evil.test" not in text


async def _prepare(runtime: TeamsEhr, sandbox: Sandbox) -> None:
    start, end = sandbox.seed_appointment("appt-m2")
    await sandbox.seed_clinician(runtime)
    await runtime.visits.meetings.prepare_visit(
        ORG,
        environment="test",
        visit_key="Appointment/appt-m2",
        ehr_user_id=PRACTITIONER,
        start=start,
        end=end,
    )
