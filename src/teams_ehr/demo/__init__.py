"""``teams-ehr demo``: the FastAPI example on the embedded sandbox, in a browser (requirement E3).

Modules: :mod:`~teams_ehr.demo.server` (the app and its loopback server),
:mod:`~teams_ehr.demo.world` (the seeded sandbox), :mod:`~teams_ehr.demo.views` (start, EHR
schedule, patient portal, attendance, admin), :mod:`~teams_ehr.demo.sandbox_web` (the fakes'
browser pages: EHR consent, Microsoft sign-in, the Teams meeting), :mod:`~teams_ehr.demo.gateway`
(redirects to the fakes' hosts mapped onto those pages), :mod:`~teams_ehr.demo.pages` (HTML).
Needs the ``fastapi`` extra (FastAPI, uvicorn). The core never imports this package.
"""
