"""The README's walk-through ("A walk-through with curl"), through Python clients generated from
the services' own OpenAPI documents by openapi-python-client: `command_client` and
`query_client`, on PYTHONPATH. Run by e2e/tests/system/conformance.rs, which passes the services'
URLs and two tenants' projects and keys in the environment.

Every call goes through the generated functions and models (nothing is sent by hand), so a
document that names a route, parameter, body or answer wrongly fails here. The last line printed
is a JSON summary of what was read back, which the Rust test asserts on too.
"""

import json
import os
import sys
from uuid import UUID

from command_client import AuthenticatedClient as CommandClient
from command_client.api.contacts import create_contact, record_contact_message
from command_client.api.sessions import (
    assign_session_agent,
    end_session,
    record_session_message,
    summarize_session,
)
from command_client.models import AssignAgent, ContactMessage, CreateContact, End, Message, Summary
from command_client.models import CommandBody
from query_client import AuthenticatedClient as QueryClient
from query_client.api.contacts import get_contact, list_contact_events
from query_client.api.event_log import list_event_log
from query_client.api.sessions import get_session
from query_client.models import ContactDto, Problem, SessionDto

AGENT = UUID("0190f1f0-0000-7000-8000-0000000000a1")


def expect(answer, status, model, what):
    """The answer has `status` and parsed into `model`; returns the parsed body."""
    if answer.status_code != status or not isinstance(answer.parsed, model):
        sys.exit(
            f"{what}: expected {status} {model.__name__}, got {int(answer.status_code)}: "
            f"{answer.content.decode(errors='replace')}"
        )
    return answer.parsed


def main():
    env = os.environ
    project = UUID(env["PROJECT_ID"])
    commands = CommandClient(base_url=env["COMMAND_URL"], token=env["API_KEY"], timeout=30)
    queries = QueryClient(base_url=env["QUERY_URL"], token=env["API_KEY"], timeout=30)

    # Create a contact: 201, Location, ETag "1".
    answer = create_contact.sync_detailed(
        project,
        client=commands,
        body=CreateContact(name="Ada Lovelace", email="Ada@Example.com", tags=["vip"]),
    )
    created = expect(answer, 201, CommandBody, "create_contact")
    assert answer.headers.get("etag") == '"1"', answer.headers
    assert answer.headers.get("location"), answer.headers
    contact = created.id

    # An inbound message on WhatsApp (channel type 1) opens a session; the answer names it.
    opened = expect(
        record_contact_message.sync_detailed(
            project,
            contact,
            client=commands,
            body=ContactMessage(channel_type_id=1, from_contact=True),
        ),
        200,
        CommandBody,
        "record_contact_message",
    )
    session = opened.session_id
    assert isinstance(session, UUID), opened
    contact_version = opened.version

    # An agent answers, is assigned; the session is summarised and ended.
    expect(
        record_session_message.sync_detailed(
            project, session, client=commands, body=Message(from_contact=False, agent_id=AGENT)
        ),
        200,
        CommandBody,
        "record_session_message",
    )
    expect(
        assign_session_agent.sync_detailed(
            project, session, client=commands, body=AssignAgent(agent_id=AGENT)
        ),
        200,
        CommandBody,
        "assign_session_agent",
    )
    expect(
        summarize_session.sync_detailed(
            project,
            session,
            client=commands,
            body=Summary(summary="Asked about pricing", sentiment="positive", sentiment_score=0.8),
        ),
        200,
        CommandBody,
        "summarize_session",
    )
    ended = expect(
        end_session.sync_detailed(project, session, client=commands, body=End(reason="agent_close")),
        200,
        CommandBody,
        "end_session",
    )

    # Read them back: min_version waits until the read model has caught up with the versions the
    # commands answered (read-your-writes without sleeping).
    read_contact = expect(
        get_contact.sync_detailed(
            project, contact, client=queries, min_version=contact_version, wait_ms=10_000
        ),
        200,
        ContactDto,
        "get_contact",
    )
    assert read_contact.version >= contact_version, read_contact
    assert read_contact.tags == ["vip"], read_contact
    read_session = expect(
        get_session.sync_detailed(
            project, session, client=queries, min_version=ended.version, wait_ms=10_000
        ),
        200,
        SessionDto,
        "get_session",
    )
    assert read_session.version == ended.version, read_session
    assert read_session.summary == "Asked about pricing", read_session
    assert read_session.agent_ids == [AGENT], read_session
    events = list_contact_events.sync_detailed(project, contact, client=queries)
    assert events.status_code == 200, events.content
    event_types = [item["event_type"] for item in json.loads(events.content)["items"]]
    assert "session.ended" in event_types, event_types
    log = list_event_log.sync_detailed(project, client=queries, aggregate_id=session)
    assert log.status_code == 200, log.content
    assert log.parsed.items, log.content

    # Another tenant, with its own key and project, cannot see the contact: a 404 problem.
    other = QueryClient(base_url=env["QUERY_URL"], token=env["OTHER_API_KEY"], timeout=30)
    refused = get_contact.sync_detailed(UUID(env["OTHER_PROJECT_ID"]), contact, client=other)
    problem = expect(refused, 404, Problem, "get_contact as another tenant")

    print(
        json.dumps(
            {
                "contact": {
                    "id": str(read_contact.id),
                    "name": read_contact.name,
                    "email": read_contact.email,
                    "version": read_contact.version,
                },
                "session": {
                    "id": str(read_session.id),
                    "contact_id": str(read_session.contact_id),
                    "status": read_session.status,
                    "version": read_session.version,
                },
                "event_types": event_types,
                "other_tenant": {
                    "status": problem.status,
                    "content_type": refused.headers.get("content-type"),
                    "title": problem.title,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
