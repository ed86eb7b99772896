// The operator console in a real browser: Debian's Chromium driven by playwright-core
// (tests/integration/test_console.py, group "browser", starts the cluster and runs this script).
//
// argv[2] is a JSON object: {"url": the console of a replica that is not the leader,
// "admin_key": a platform admin's API key, "user_key": the API key of a user of team-b only,
// "leader_id": the leader's replica id, "members": the member ids, "cli_sandbox": the name of the
// sandbox the harness creates in "default" through the CLI, "user_sandbox": the team-b user's own
// sandbox, "shots": a directory for screenshots or ""}.
//
// The script asks the harness for the steps only it can do by writing one line to stdout
// ("STEP kill-leader", "STEP create-sandbox") and reading one line back on stdin ("done ..." or
// "error ..."). It ends with "RESULT <json>" and exit status 0, or a message on stderr and status 1.
// Every wait has a deadline; nothing sleeps for a fixed time.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

// playwright-core is installed outside the source tree (test_console.py, browser_tools): the
// harness names the directory whose node_modules holds it.
const { chromium } = createRequire(process.env.GANTRY_CONSOLE_TOOLS_DIR + "/package.json")("playwright-core");

const cfg = JSON.parse(process.argv[2]);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const result = {};

async function step(name) {
  process.stdout.write("STEP " + name + "\n");
  const { value, done } = await lines.next();
  if (done || !value.startsWith("done")) throw new Error("the harness could not " + name + ": " + value);
  return value.slice(4).trim();
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function shot(page, name) {
  if (cfg.shots) await page.screenshot({ path: cfg.shots + "/" + name, fullPage: true });
}

async function signIn(browser, key) {
  // A context of its own: its own cookie jar, so the two principals' sessions never mix.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(cfg.url);
  await page.locator("#login-view").waitFor({ state: "visible" });
  // Before sign-in the page holds no tenant data at all.
  check(await page.locator("#app-view").isHidden(), "the data view is visible before sign-in");
  check((await page.locator(".ns").count()) === 0, "namespaces shown before sign-in");
  await page.fill("#token", key);
  await page.click("#login-btn");
  await page.locator("#conn.on").waitFor();
  return page;
}

const browser = await chromium.launch({
  executablePath: process.env.GANTRY_CHROMIUM || "/usr/bin/chromium",
  // As root Chromium needs --no-sandbox; the rest keeps it off the (closed) network.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  // A wrong key is refused on the page, with the API's reason, and shows nothing.
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(cfg.url);
    await page.fill("#token", "gtk_notakey_000000");
    await page.click("#login-btn");
    await page.waitForFunction(() => document.getElementById("login-error").textContent !== "");
    check(await page.locator("#app-view").isHidden(), "a wrong key opened the data view");
    result.refused = await page.locator("#login-error").textContent();
    await ctx.close();
  }

  // The platform admin: three members, the leader named.
  const admin = await signIn(browser, cfg.admin_key);
  await admin.waitForFunction((ids) => {
    const rows = [...document.querySelectorAll("#members tbody tr")];
    return rows.length === ids.length && ids.every((id) => rows.some((r) => r.dataset.memberId === String(id)))
      && rows.every((r) => r.querySelector(".up"));
  }, cfg.members);
  await admin.waitForFunction((id) => document.getElementById("leader-name").dataset.leaderId === String(id),
    cfg.leader_id);
  check((await admin.locator("#members td.leader").count()) === 1, "not exactly one member marked leader");
  // Each member's Raft lag, as the leader's replica measures it: 0 for all three once caught up.
  await admin.waitForFunction(() => {
    const cells = [...document.querySelectorAll("#members tbody td.lag")];
    return cells.length === 3 && cells.every((c) => c.textContent === "0");
  });
  result.lags_shown = true;
  result.leader_before = cfg.leader_id;
  await shot(admin, "console-cluster.png");

  // The leader dies; the page names another leader within 2 s of the request to kill it.
  const t0 = Date.now();
  await step("kill-leader");
  const killedAfter = Date.now() - t0;
  const handle = await admin.waitForFunction((old) => {
    const id = document.getElementById("leader-name").dataset.leaderId;
    return id !== String(old) && id !== "0" && id !== undefined ? id : null;
  }, cfg.leader_id, { timeout: 2000, polling: 20 });
  result.new_leader_ms = Date.now() - t0;
  result.kill_ms = killedAfter;
  result.leader_after = Number(await handle.jsonValue());
  // The dead replica is then shown unreachable.
  await admin.locator(`#members tr[data-member-id="${cfg.leader_id}"] td.down`).waitFor();
  // ... and its lag unknown ("-"), not a made-up 0.
  await admin.waitForFunction((id) => {
    const c = document.querySelector(`#members tr[data-member-id="${id}"] td.lag`);
    return c && c.textContent === "-";
  }, cfg.leader_id);
  await shot(admin, "console-failover.png");

  // A sandbox created through the CLI appears, in its namespace, and reaches READY.
  await step("create-sandbox");
  const row = admin.locator(`.ns[data-ns="default"] tr[data-sb="${cfg.cli_sandbox}"]`);
  await row.waitFor();
  await admin.waitForFunction((name) => {
    const r = document.querySelector(`.ns[data-ns="default"] tr[data-sb="${name}"]`);
    return r && r.children[1].textContent === "READY";
  }, cfg.cli_sandbox);
  result.cli_sandbox_shown = true;
  // It counts in the quota line of "default" (the harness set a limit of 5 sandboxes there).
  await admin.waitForFunction(() => {
    const q = document.querySelector('.ns[data-ns="default"] span[data-quota="sandboxes"]');
    return q && q.textContent === "sandboxes 1 / 5";
  });
  await shot(admin, "console-admin.png");

  // A user of team-b sees team-b and its own sandbox, nothing of "default", no cluster or drill.
  const user = await signIn(browser, cfg.user_key);
  await user.locator(`.ns[data-ns="team-b"] tr[data-sb="${cfg.user_sandbox}"]`).waitFor();
  const shown = await user.$$eval(".ns", (cards) => cards.map((c) => c.dataset.ns));
  check(JSON.stringify(shown) === JSON.stringify(["team-b"]), "the team-b user sees namespaces " + shown);
  const text = await user.locator("main").innerText();
  check(!text.includes(cfg.cli_sandbox), "the team-b user sees a sandbox of default");
  check(await user.locator("#cluster-panel").isHidden(), "the team-b user sees the cluster panel");
  check(await user.locator("#drill-panel").isHidden(), "the team-b user sees the drill");
  const last = await user.evaluate(() => window.gantryConsole.last());
  check(last.namespaces.length === 1 && last.namespaces[0].name === "team-b" && last.cluster === null,
    "the team-b user's data holds more than team-b");
  result.user_sees = shown;
  await shot(user, "console-user.png");

  process.stdout.write("RESULT " + JSON.stringify(result) + "\n");
} catch (e) {
  process.stderr.write("console.mjs: " + (e && e.stack ? e.stack : e) + "\n");
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
