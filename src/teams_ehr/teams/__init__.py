"""Microsoft Teams: Graph client, meeting factory, lobby policy, Entra sign-in (requirements B1–B6).

Never imports :mod:`teams_ehr.attendance`; msgraph only in ``msgraph_adapter`` (lazily)."""
