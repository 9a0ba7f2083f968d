"""The MCP server against a real core node, with the official Python MCP client (PyPI `mcp`): tools listed over
stdio (the `tracker-mcp` binary) and over streamable HTTP (`/mcp` on the node), read and write tools called on
seeded data, every structured result checked against the tool's declared output schema, and refusals: across
tenants, for a destructive call without confirmation, for admin tools with a tenant key, over the rate limit.

Run by scripts/test-mcp.sh (which starts the node): TRACKER_BASE, TRACKER_ADMIN and TRACKER_MCP_BIN.
"""

import asyncio
import json
import os
import time
import urllib.error
import urllib.request

import httpx2
import jsonschema
import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

BASE = os.environ["TRACKER_BASE"]
ADMIN = os.environ["TRACKER_ADMIN"]
MCP_BIN = os.environ["TRACKER_MCP_BIN"]
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def api(method, path, credential, body=None, headers=None):
    """A platform API call: (status, JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {credential}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read()
            return res.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def tenant(prefix, rpm=100000):
    status, body = api("POST", "/api/tenants", ADMIN, {
        "name": prefix.title(), "key_prefix": prefix, "plan": "enterprise",
        "limits": {"api_requests_per_minute": rpm},
    })
    assert status == 201, body
    return body["api_key"]["secret"]


@pytest.fixture(scope="session")
def seeded():
    """Two tenants; acme has links with clicks on them, evil has a link of its own."""
    acme, evil = tenant("acme"), tenant("evil")
    links = []
    for name in ("spring sale", "newsletter", "retargeting"):
        status, link = api("POST", "/api/links", acme, {"destination": f"https://shop.example/{name.split()[0]}",
                                                         "name": name})
        assert status == 201, link
        links.append(link)
    status, evil_link = api("POST", "/api/links", evil, {"destination": "https://evil.example/", "name": "evil"})
    assert status == 201, evil_link
    for _ in range(3):
        req = urllib.request.Request(links[0]["url"], headers={"user-agent": BROWSER_UA})
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(req, timeout=10)
        except urllib.error.HTTPError as e:
            assert e.code in (301, 302, 303, 307, 308), e.code
    deadline = time.time() + 20
    while time.time() < deadline:
        status, events = api("GET", f"/api/events?tu_id={links[0]['tu_id']}", acme)
        if status == 200 and len(events["data"]) >= 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the clicks never reached the hot tier")
    return {"acme": acme, "evil": evil, "links": links, "evil_link": evil_link}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def over_http(credential, work):
    """Runs `work(session)` in an MCP session over streamable HTTP with the bearer credential."""
    async def run():
        client = httpx2.AsyncClient(headers={"authorization": f"Bearer {credential}"}, timeout=30)
        async with client, streamable_http_client(f"{BASE}/mcp", http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)
    return asyncio.run(run())


def over_stdio(credential, work):
    """Runs `work(session)` in an MCP session with the `tracker-mcp` binary over stdio."""
    async def run():
        params = StdioServerParameters(command=MCP_BIN, env={"TRACKER_API_URL": BASE, "TRACKER_API_KEY": credential})
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)
    return asyncio.run(run())


def structured(tool, result):
    """A successful result's structured content, checked against the tool's declared output schema."""
    assert not result.is_error, result.content
    assert tool.output_schema is not None, f"{tool.name} declares no output schema"
    jsonschema.validate(result.structured_content, tool.output_schema,
                        cls=jsonschema.Draft202012Validator, format_checker=jsonschema.FormatChecker())
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def tool_error(result):
    assert result.is_error, result
    return json.loads(result.content[0].text)["error"]


async def tools_by_name(session):
    return {t.name: t for t in (await session.list_tools()).tools}


def test_the_same_tools_over_stdio_and_http_with_annotations(seeded):
    http_tools = over_http(seeded["acme"], tools_by_name)
    stdio_tools = over_stdio(seeded["acme"], tools_by_name)
    assert set(http_tools) == set(stdio_tools)
    for name, tool in http_tools.items():
        assert tool.input_schema == stdio_tools[name].input_schema
        assert tool.description and len(tool.description) > 60, name
    # a tenant key's tools: the tenant's, never the operator's
    assert {"list_links", "create_link", "event_stats", "match_events", "sign_link", "get_beacon"} <= set(http_tools)
    assert not {"list_tenants", "create_tenant", "admin_usage"} & set(http_tools)
    a = http_tools["list_links"].annotations
    assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint) == (True, False, True)
    a = http_tools["delete_link"].annotations
    assert (a.read_only_hint, a.destructive_hint) == (False, True)
    assert "confirm" in http_tools["delete_link"].input_schema["required"]
    assert http_tools["create_link"].annotations.idempotent_hint is False
    assert http_tools["test_webhook"].annotations.open_world_hint is True

    admin_tools = over_http(ADMIN, tools_by_name)
    assert {"list_tenants", "create_tenant", "admin_usage", "get_me"} <= set(admin_tools)
    assert "list_links" not in admin_tools


def test_read_tools_answer_within_their_output_schemas(seeded):
    first = seeded["links"][0]

    async def work(session):
        tools = await tools_by_name(session)
        call = lambda name, args=None: session.call_tool(name, args or {})  # noqa: E731
        me = structured(tools["get_me"], await call("get_me"))
        assert (me["kind"], me["key_prefix"]) == ("tenant", "acme")
        links = structured(tools["list_links"], await call("list_links"))
        assert {l["tu_id"] for l in links["data"]} == {l["tu_id"] for l in seeded["links"]}
        link = structured(tools["get_link"], await call("get_link", {"tu_id": first["tu_id"]}))
        assert link["destination"] == first["destination"]
        events = structured(tools["list_events"], await call("list_events", {"tu_id": first["tu_id"]}))
        assert len(events["data"]) == 3 and {e["event_type"] for e in events["data"]} == {"click"}
        stats = structured(tools["event_stats"], await call("event_stats", {"group_by": "tu_id", "hours": 1}))
        per_link = {t["key"]: t["count"] for t in stats["totals"]}
        assert per_link == {first["tu_id"]: 3}, stats
        for name in ("get_beacon", "get_intake", "get_usage", "preview_invoice", "list_drops", "list_rules",
                     "list_webhooks", "list_api_keys", "list_ingest_tokens"):
            structured(tools[name], await call(name))
        # pages: one link at a time, then the next with the cursor the first answered
        page1 = structured(tools["list_links"], await call("list_links", {"limit": 1}))
        page2 = structured(tools["list_links"], await call("list_links", {"limit": 1, "cursor": page1["next_cursor"]}))
        assert page1["next_cursor"] and page1["data"][0]["tu_id"] != page2["data"][0]["tu_id"]

    over_http(seeded["acme"], work)


def test_write_tools_change_the_tenant_and_destructive_ones_need_confirmation(seeded):
    async def work(session):
        tools = await tools_by_name(session)
        created = structured(tools["create_link"], await session.call_tool(
            "create_link", {"destination": "https://shop.example/mcp", "name": "from an assistant"}))
        tu_id = created["tu_id"]
        assert api("GET", f"/api/links/{tu_id}", seeded["acme"])[1]["name"] == "from an assistant"
        structured(tools["update_link"], await session.call_tool(
            "update_link", {"tu_id": tu_id, "destination": "https://shop.example/changed"}))
        assert api("GET", f"/api/links/{tu_id}", seeded["acme"])[1]["destination"] == "https://shop.example/changed"
        signed = structured(tools["sign_link"], await session.call_tool(
            "sign_link", {"tu_id": tu_id, "params": {"source": "newsletter"}}))
        assert "source=newsletter" in json.dumps(signed)

        refused = tool_error(await session.call_tool("delete_link", {"tu_id": tu_id}))
        assert refused["code"] == "confirmation_required" and "confirm" in refused["message"]
        assert api("GET", f"/api/links/{tu_id}", seeded["acme"])[0] == 200, "deleted without confirmation"
        done = await session.call_tool("delete_link", {"tu_id": tu_id, "confirm": True})
        assert not done.is_error, done.content
        assert api("GET", f"/api/links/{tu_id}", seeded["acme"])[0] == 404

        # the API's own refusals come back as tool errors with its code and message
        bad = tool_error(await session.call_tool("create_link", {"destination": "javascript:alert(1)"}))
        assert bad["code"] == "invalid_field" and bad["message"]
        unknown = tool_error(await session.call_tool("list_links", {"tenant": "evil"}))
        assert unknown["code"] == "invalid_arguments" and "tenant" in unknown["message"]

    over_stdio(seeded["acme"], work)


def test_no_tool_reaches_another_tenant(seeded):
    theirs = seeded["links"][0]["tu_id"]

    async def work(session):
        got = tool_error(await session.call_tool("get_link", {"tu_id": theirs}))
        assert got["code"] == "not_found"
        changed = tool_error(await session.call_tool("update_link", {"tu_id": theirs, "destination": "https://evil.example/"}))
        assert changed["code"] == "not_found"
        deleted = tool_error(await session.call_tool("delete_link", {"tu_id": theirs, "confirm": True}))
        assert deleted["code"] == "not_found"
        links = (await session.call_tool("list_links", {})).structured_content["data"]
        assert [l["tu_id"] for l in links] == [seeded["evil_link"]["tu_id"]]
        events = (await session.call_tool("list_events", {"tu_id": theirs})).structured_content["data"]
        assert events == []
        with pytest.raises(Exception, match="no tool named list_tenants"):
            await session.call_tool("list_tenants", {})
        with pytest.raises(Exception, match="no such resource"):
            await session.read_resource(f"tracker://links/{theirs}")

    over_http(seeded["evil"], work)
    assert api("GET", f"/api/links/{theirs}", seeded["acme"])[1]["destination"] == seeded["links"][0]["destination"]


def test_resources_and_prompts(seeded):
    first = seeded["links"][0]["tu_id"]

    async def work(session):
        uris, cursor = [], None
        while True:
            page = await session.list_resources(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            uris += [str(r.uri) for r in page.resources]
            cursor = page.next_cursor
            if not cursor:
                break
        assert "tracker://openapi.json" in uris and f"tracker://links/{first}" in uris
        doc = json.loads((await session.read_resource("tracker://openapi.json")).contents[0].text)
        assert doc["openapi"].startswith("3.1")
        link = json.loads((await session.read_resource(f"tracker://links/{first}")).contents[0].text)
        assert link["tu_id"] == first
        templates = [t.uri_template for t in (await session.list_resource_templates()).resource_templates]
        assert "tracker://links/{tu_id}" in templates
        prompts = {p.name for p in (await session.list_prompts()).prompts}
        assert prompts == {"weekly_report", "conversions_drop", "new_campaign"}
        prompt = await session.get_prompt(
            "new_campaign", {"destination": "https://shop.example/x", "campaign": "x", "channels": "google,meta"})
        text = prompt.messages[0].content.text
        tools = await tools_by_name(session)
        named = [w.strip(".,:") for w in text.split() if "_" in w and w.strip(".,:") in tools]
        assert "create_link" in named and "sign_link" in named

    over_http(seeded["acme"], work)


def test_mcp_needs_a_credential_and_counts_against_the_rate_limit(seeded):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    res = httpx2.post(f"{BASE}/mcp", json=init, headers=headers)
    assert res.status_code == 401 and res.json()["error"]["code"] == "missing_credentials"
    assert res.headers["www-authenticate"].startswith("Bearer")
    res = httpx2.post(f"{BASE}/mcp", json=init, headers=headers | {"authorization": "Bearer trk_key_nope"})
    assert res.status_code == 401

    slow = tenant("slow", rpm=3)
    statuses = [httpx2.post(f"{BASE}/mcp", json=init, headers=headers | {"authorization": f"Bearer {slow}"}).status_code
                for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429], statuses


def test_function_calling_definitions_are_the_mcp_tools(seeded):
    mcp_tools = over_http(seeded["acme"], tools_by_name)
    with urllib.request.urlopen(f"{BASE}/api/tools?format=openai") as res:
        openai = json.load(res)
    with urllib.request.urlopen(f"{BASE}/api/tools?format=anthropic") as res:
        anthropic = json.load(res)
    assert {t["function"]["name"] for t in openai} == set(mcp_tools)
    assert {t["name"] for t in anthropic} == set(mcp_tools)
    for t in anthropic:
        assert t["input_schema"] == mcp_tools[t["name"]].input_schema
        jsonschema.Draft202012Validator.check_schema(t["input_schema"])
    status, _ = api("GET", "/api/tools?format=yaml", seeded["acme"])
    assert status == 400
