"""The OpenAI-compatible endpoint driven by the real ``openai`` client, and a schemathesis fuzz run."""

from __future__ import annotations

from typing import Iterator

import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from server_harness import CARD, ID_MARIA, LOST, Live, say, serve_in_thread

from sopagent.server.config import ServeConfig


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db = f"sqlite:///{tmp_path_factory.mktemp('openai') / 'audit.db'}"
    yield from serve_in_thread(ServeConfig(policies=[CARD], db=db, model="echo", model_timeout_s=5))


def _client(live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=live.customer, max_retries=0)


def test_openai_front_ends_list_the_policies_as_models(live: Live) -> None:
    models = _client(live).models.list()
    assert [m.id for m in models.data] == ["card_services"] and models.data[0].owned_by == "sopagent"
    anonymous = openai.OpenAI(base_url=f"{live.url}/v1", api_key="sop_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_openai_client_continues_a_customer_conversation(live: Live) -> None:
    client = _client(live)
    catalog = live.service.agents["card_services"].policy.catalog
    first = client.chat.completions.create(model="card_services", user="cust-42",
                                           messages=[{"role": "user", "content": say(LOST)}])
    assert first.choices[0].message.content == catalog["ask_identity"].text
    second = client.chat.completions.with_raw_response.create(
        model="card_services", user="cust-42", messages=[{"role": "user", "content": say(ID_MARIA)}])
    cid = second.headers["x-conversation-id"]
    completion = second.parse()
    assert completion.model_extra["sopagent"]["conversation_id"] == cid
    assert first.model_extra["sopagent"]["conversation_id"] == cid
    decisions = live.service.store.decisions(cid)
    assert [d.id for d in decisions] == [first.model_extra["sopagent"]["decision_id"],
                                         completion.model_extra["sopagent"]["decision_id"]]
    assert completion.choices[0].message.content == decisions[-1].sent_text


def test_openai_streaming_returns_the_committed_catalog_reply(live: Live) -> None:
    client = _client(live)
    stream = client.chat.completions.create(model="card_services", stream=True,
                                            messages=[{"role": "system", "content": "ignored"},
                                                      {"role": "user", "content": say(LOST)}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == "stop"
    decision_id = chunks[0].model_extra["sopagent"]["decision_id"]
    recorded = [d for d in live.service.store.decisions() if d.id == decision_id][0]
    assert text == recorded.sent_text == live.service.agents["card_services"].policy.catalog["ask_identity"].text


def test_openai_header_and_errors(live: Live) -> None:
    client = _client(live)
    started = client.chat.completions.create(model="card_services", messages=[{"role": "user", "content": say(LOST)}])
    cid = started.model_extra["sopagent"]["conversation_id"]
    follow = client.chat.completions.create(model="card_services", extra_headers={"X-Conversation-Id": cid},
                                            messages=[{"role": "user", "content": say(ID_MARIA)}])
    assert follow.model_extra["sopagent"]["conversation_id"] == cid
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "unknown policy 'gpt-4o'" in str(unknown.value.body)
    with pytest.raises(openai.UnprocessableEntityError) as no_user:
        client.chat.completions.create(model="card_services", messages=[{"role": "system", "content": "x"}])
    assert "no user message" in str(no_user.value.body)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="sop_wrong", max_retries=0).chat.completions.create(
            model="card_services", messages=[{"role": "user", "content": "hi"}])


def test_fuzz_from_openapi_document_never_5xx(live: Live) -> None:
    """Generate requests from the service's own OpenAPI document; no response may be a 5xx."""
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    failures: list[str] = []
    statuses: list[int] = []
    for key, mode in ((live.customer, GenerationMode.POSITIVE), (live.operator, GenerationMode.POSITIVE),
                      (live.customer, GenerationMode.NEGATIVE)):
        for operation in schema.get_all_operations():
            op = operation.ok()

            @settings(max_examples=20, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=30)
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:200]}")

            try:
                run()
            except Unsatisfiable:  # negative mode on an operation with nothing to break (no parameters)
                assert mode is GenerationMode.NEGATIVE
    assert failures == []
    assert len(statuses) > 100 and {200, 404, 422} <= set(statuses)  # the fuzzer reached the handlers
