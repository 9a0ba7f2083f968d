"""The official Python MCP client at an MCP URL (the edge Worker's /mcp in tests/edge/mcp.test.mjs): lists the
tools and reads two links, printing what it saw as one JSON line.

Usage: edge_check.py <mcp url> <bearer credential> <tu_id> [<tu_id> ...]
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url, credential, tu_ids):
    client = httpx2.AsyncClient(headers={"authorization": f"Bearer {credential}"}, timeout=30)
    async with client, streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        tools = [t.name for t in (await session.list_tools()).tools]
        links = {}
        for tu_id in tu_ids:
            result = await session.call_tool("get_link", {"tu_id": tu_id})
            answer = json.loads(result.content[0].text)
            links[tu_id] = answer["error"]["code"] if result.is_error else answer["destination"]
        print(json.dumps({"tools": tools, "links": links}))


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
