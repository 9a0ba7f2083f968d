// docs/onboarding.md, run: its shell snippets (credentials, an ingest token, the beacon's origins, a postback, the
// checks) against a real core node in the order the guide gives them, and its TypeScript and Python snippets
// against the SDKs (its Rust snippets compile as doctests of tracker-sdk). A guide whose commands fail is a bug.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Core, ROOT, eventually } from "./harness.mjs";

const ADMIN = "admin-token-for-the-onboarding-guide-0123456789";
const guide = readFileSync(join(ROOT, "docs/onboarding.md"), "utf8");
const blocks = (lang, text = guide) => [...text.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]);
const section = (n) => guide.slice(guide.indexOf(`\n## ${n}.`), guide.indexOf(`\n## ${n + 1}.`));

describe("the onboarding guide's snippets", () => {
  const core = new Core({ ADMIN_TOKEN: ADMIN });
  const env = { ADMIN_TOKEN: ADMIN };

  before(() => core.start());
  after(() => core.cleanup());

  it("every shell snippet runs against a node and gets an answer without an error", () => {
    const snippets = blocks("sh").filter((b) => b.trimStart().startsWith("curl"));
    assert.ok(snippets.length >= 6, `${snippets.length} shell snippets`);
    for (const snippet of snippets) {
      // one answer per line, as a reader's terminal shows them
      const script = "curl() { command curl \"$@\"; echo; }\n" + snippet.replaceAll("https://track.example.com", core.url);
      const out = execFileSync("bash", ["-euo", "pipefail", "-c", script], { env: { ...process.env, ...env }, encoding: "utf8" });
      const answers = out.trim().split("\n").filter(Boolean).map((line) => JSON.parse(line));
      for (const answer of answers) assert.equal(answer.error, undefined, `${snippet}\n=> ${JSON.stringify(answer)}`);
      // what later snippets need, taken from the answers as a reader would
      for (const answer of answers) {
        if (answer.api_key) env.API_KEY = answer.api_key.secret;
        if (answer.signing_key) env.SIGNING_SECRET = answer.signing_key.signing_secret;
        if (answer.token?.token_id || (answer.secret && String(answer.secret).startsWith("trk_ing_"))) env.INGEST_TOKEN = answer.secret;
        if (answer.event_id) env.AD_CLICK_ID = answer.event_id;
      }
      env.AD_CLICK_ID ??= "0195f0c0-0000-7000-8000-000000000000";
    }
    assert.ok(env.API_KEY && env.INGEST_TOKEN, "the guide's credentials were made");
  });

  it("the TypeScript and Python snippets build links the node redirects, and the batch snippet's event is stored", async () => {
    const sdk = join(ROOT, "clients/sdk-typescript/dist/index.js");
    const ts = blocks("ts", section(3)).join("\n")
      .replaceAll("'tracker-sdk'", JSON.stringify(sdk))
      .replaceAll("https://track.example.com", core.url);
    const file = join(core.dir, "guide.ts");
    writeFileSync(file, `const adClickId = "${env.AD_CLICK_ID}";\n${ts}\nconsole.log(link);\n`);
    const js = execFileSync(join(ROOT, "node_modules/.bin/esbuild"), [file, "--format=esm", "--log-level=warning"], { encoding: "utf8" });
    writeFileSync(join(core.dir, "guide.mjs"), js);
    const secrets = { SIGNING_SECRET: env.SIGNING_SECRET, INGEST_TOKEN: env.INGEST_TOKEN };
    const tsLink = execFileSync("node", [join(core.dir, "guide.mjs")], { env: { ...process.env, ...secrets }, encoding: "utf8" }).trim();
    const py = blocks("python", section(3)).join("\n").replaceAll("https://track.example.com", core.url);
    const pyLink = execFileSync("python3", ["-c", `SIGNING_SECRET = ${JSON.stringify(env.SIGNING_SECRET)}\n${py}\nprint(link)`], {
      env: { ...process.env, PYTHONPATH: join(ROOT, "clients/sdk-python/src") },
      encoding: "utf8",
    }).trim();
    for (const link of [tsLink, pyLink]) {
      const res = execFileSync("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", link], { encoding: "utf8" });
      assert.match(res, /^307 https:\/\/acme\.example\/spring-sale\?/, link);
    }
    // the batch client's event (the snippet closes the client, which sends it) is stored
    const stored = await eventually(async () => {
      const res = await fetch(`${core.url}/api/events?event_type=purchase&limit=100`, {
        headers: { authorization: `Bearer ${env.API_KEY}` },
      });
      const body = await res.json();
      return body.data?.find((e) => e.params.order === "o-1");
    }, 20000, "the batch snippet's purchase");
    assert.equal(stored.params.ad_click_id, env.AD_CLICK_ID);
  });
});
