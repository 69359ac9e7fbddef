"""Property: any interleaving of duplicated, reordered deliveries across two organizations gives
exactly the per-organization facts of the ground truth (security.md T24 hypothesis, R06, R22)."""

from __future__ import annotations

from datetime import timedelta

import anyio
from attendance_in_support import (
    KEYER,
    ORG,
    OTHER_TENANT,
    delta_guest,
    make_harness,
    meeting_row,
    roster_event,
    subscription_row,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from teams_ehr.attendance.events import fact_key
from teams_ehr.attendance.inbox_processor import InboxProcessor
from teams_ehr.attendance.webhook import handle_notifications

ORGS = (ORG, "org-b")
EVENT = st.tuples(
    st.sampled_from(ORGS),
    st.sampled_from(["p1", "p2", "p3"]),
    st.booleans(),  # left?
    st.integers(min_value=1, max_value=90),  # minutes before now
)


@settings(max_examples=15, deadline=None)
@given(
    events=st.lists(EVENT, min_size=1, max_size=6, unique=True),
    plan=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=12),
)
def test_duplicates_and_reordering_never_change_the_facts(
    events: list[tuple[str, str, bool, int]], plan: list[int]
) -> None:
    async def run() -> None:
        h = await make_harness()
        await h.store.put_subscription(
            subscription_row(subscription_id="sub-b", org_id="org-b", client_state="b-state")
        )
        await h.store.put_meeting(meeting_row(org_id="org-b"))
        bodies = []
        for org, person, left, minutes in events:
            at = (h.clock() - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
            content = roster_event(delta_guest(person, left=left), at=at)
            if org == ORG:
                bodies.append(h.body(h.item(content)))
            else:
                item = h.item(
                    content, subscriptionId="sub-b", clientState="b-state", tenantId=OTHER_TENANT
                )
                bodies.append(h.body(item, tokens=[h.token(tenant_id=OTHER_TENANT)]))
        # every body at least once, then the plan's extra (re)deliveries, in plan order
        order = list(range(len(bodies))) + [i % len(bodies) for i in plan]
        order.sort(key=lambda i: plan[i % len(plan)])
        for index in order:
            result = await handle_notifications(
                bodies[index],
                security=h.security,
                inbox=h.store,
                subscriptions=h.store,
                now=h.clock(),
            )
            assert result.status == 202
        processor = InboxProcessor(
            inbox=h.store,
            facts=h.store,
            meetings=h.store,
            bus=h.store,
            keyer=KEYER,
            worker="w",
            clock=h.clock,
        )
        await processor.run_once(limit=1000)
        for org in ORGS:
            expected = {
                fact_key(
                    org,
                    "ext-visit-1",
                    KEYER.key(org, person),
                    "disconnected" if left else "connected",
                    h.clock() - timedelta(minutes=minutes),
                )
                for o, person, left, minutes in events
                if o == org
            }
            got = {f.fact_key for f in h.store.facts.values() if f.org_id == org}
            assert got == expected

    anyio.run(run)
