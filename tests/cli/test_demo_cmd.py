"""`teams-ehr demo`: the web demo by default, the console walkthrough with --console (SPEC E3)."""

from __future__ import annotations

import re

import httpx
import pytest

from teams_ehr.cli import demo_cmd, main
from teams_ehr.demo.server import DemoServer


def test_console_walkthrough(capsys: pytest.CaptureFixture[str]) -> None:
    """The whole visit, in order, in plain words, down to the write-back (issue 13, finding 6)."""
    assert main(["demo", "--console"]) == 0
    out = capsys.readouterr().out
    milestones = [
        "The clinician clicks 'Begin virtual visit' in the EHR",
        "signs in to Microsoft",
        "creates the Teams meeting",
        "only the clinician skips the lobby: yes.",
        "The clinician joins the meeting",
        "The patient opens the link in their text message",
        "Waiting in the lobby: yes.",
        "The clinician admits the patient. Both are in the call: yes.",
        "the patient connected",
        "the patient left",
        "the call ended",
        "Written back to the EHR: 1 visit note on the appointment's record.",
        "Patient waited in the lobby: 3 min 0 s",
    ]
    positions = [out.find(text) for text in milestones]
    assert -1 not in positions, [m for m, p in zip(milestones, positions, strict=True) if p < 0]
    assert positions == sorted(positions)  # in the order they happened
    steps = [int(n) for n in re.findall(r"^\s*(\d+)\. ", out, re.M)]
    assert steps == list(range(1, len(steps) + 1))
    for jargon in ("PKCE", "private_key_jwt", "id_token", "lobby bypass", "fhirUser", "call_"):
        assert jargon not in out
    assert out.rstrip().endswith("All steps passed.")


def test_web_demo_prints_one_url_and_serves_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pages: dict[str, int] = {}

    def serve_briefly(server: DemoServer) -> None:  # instead of blocking until Ctrl-C
        server.start()
        try:
            for path in ("", "ehr", "portal", "demo/admin", "attendance"):
                pages[path] = httpx.get(server.url + path).status_code
        finally:
            server.stop()

    monkeypatch.setattr(demo_cmd, "serve", serve_briefly)
    assert main(["demo", "--port", "0", "--no-browser"]) == 0
    out = capsys.readouterr().out
    urls = re.findall(r"https?://\S+", out)
    assert len(urls) == 1
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", urls[0])
    assert set(pages.values()) == {200}


def test_web_demo_refuses_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    busy = DemoServer(port=0)
    try:
        assert main(["demo", "--port", str(busy.port), "--no-browser"]) == 2
    finally:
        busy.stop()
    assert "cannot listen" in capsys.readouterr().err


def test_web_demo_host_is_loopback_only() -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--host", "0.0.0.0", "--no-browser"])


def test_ctrl_c_stops_the_web_demo_cleanly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(server: DemoServer) -> None:
        server.stop()  # what uvicorn does on Ctrl-C, then it re-raises the signal
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_cmd, "serve", interrupted)
    assert main(["demo", "--port", "0", "--no-browser"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("stopped.")
