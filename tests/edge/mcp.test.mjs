// MCP through the edge: the official Python MCP client (tests/mcp/edge_check.py) at the Worker's /mcp, which
// forwards to a core node's MCP service like any platform API request (signed, the credential as its hash): the
// tenant's tools are listed, its link is read, another tenant's is not found.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import { Core, ROOT, worker } from "./harness.mjs";

const ADMIN = "admin-token-for-mcp-edge-tests-0123456789abcdef";
const PYTHON = join(process.env.TRACKER_VENV ?? join(process.env.HOME, ".cache/tracker/venv"), "bin/python");

describe("MCP at the edge", () => {
  const core = new Core({ ADMIN_TOKEN: ADMIN });
  let mf, url;

  const api = async (method, path, credential, body) => {
    const res = await mf.dispatchFetch(`http://edge.test${path}`, {
      method,
      headers: { authorization: `Bearer ${credential}`, "content-type": "application/json", "cf-connecting-ip": "198.51.100.9" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return [res.status, await res.json()];
  };

  before(async () => {
    await core.start();
    mf = worker({ CORE_URLS: core.url });
    url = await mf.ready;
  });

  after(async () => {
    await mf?.dispose();
    core.cleanup();
  });

  it("lists a tenant's tools and reads only its own links through the Worker", async () => {
    const [, acme] = await api("POST", "/api/tenants", ADMIN, { name: "Acme", key_prefix: "acme", plan: "pro" });
    const [, evil] = await api("POST", "/api/tenants", ADMIN, { name: "Evil", key_prefix: "evil", plan: "pro" });
    const [s1, own] = await api("POST", "/api/links", acme.api_key.secret, { destination: "https://acme.example/landing" });
    const [s2, theirs] = await api("POST", "/api/links", evil.api_key.secret, { destination: "https://evil.example/" });
    assert.deepEqual([s1, s2], [201, 201]);
    const { stdout } = await promisify(execFile)(
      PYTHON,
      [join(ROOT, "tests/mcp/edge_check.py"), new URL("/mcp", url).href, acme.api_key.secret, own.tu_id, theirs.tu_id],
      { timeout: 60_000 },
    );
    const seen = JSON.parse(stdout.trim().split("\n").pop());
    assert.ok(seen.tools.includes("list_links") && seen.tools.includes("event_stats"), seen.tools.join(","));
    assert.ok(!seen.tools.includes("list_tenants"));
    assert.deepEqual(seen.links, { [own.tu_id]: "https://acme.example/landing", [theirs.tu_id]: "not_found" });
  });

  it("refuses MCP without a credential at the edge", async () => {
    const res = await mf.dispatchFetch("http://edge.test/mcp", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, "missing_credentials");
  });
});
