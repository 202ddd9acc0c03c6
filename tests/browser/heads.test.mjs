// The explorer page (GET /) with the other head kinds, in headless Chromium, against a server
// that serves the head-kind test packages (tests/fixtures/models/heads: segmentation,
// embedding, binary, grey, letterbox…); a detector, which has no test package, is mocked.
//
// Environment: SCORECAM_HEADS_URL (that server; without it every case is skipped, saying why),
// CHROMIUM (default /usr/bin/chromium), ARTIFACT_DIR (screenshots). scripts/ci/browser_test.sh
// starts the server when the packages are there.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BASE = (process.env.SCORECAM_HEADS_URL || "").replace(/\/$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.resolve(process.env.ARTIFACT_DIR || path.join(root, "target/browser-artifacts"));
const HEADS = path.join(root, "tests/fixtures/models/heads");
const TIMEOUT = 60_000;

const NEEDED = ["segmentation", "embedding"].map((p) => path.join(HEADS, p, "model.toml"));
const missing = NEEDED.filter((f) => !existsSync(f)).map((f) => path.relative(root, f));
const skip = !BASE
  ? "SCORECAM_HEADS_URL is not set (scripts/ci/browser_test.sh sets it when tests/fixtures/models/heads has its packages)"
  : missing.length ? `the head-kind test packages are not there yet (missing ${missing.join(", ")})` : false;
if (skip) console.log(`# SKIPPED: head-kind browser cases: ${skip}`);

let browser;
let models;          // GET /models of the heads server
const consoleErrors = [];

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

/** A fresh page on the heads server, recording its requests and console errors. */
async function openPage() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, acceptDownloads: true });
  const p = await ctx.newPage();
  const requests = [];
  p.on("request", (r) => requests.push(r));
  p.on("console", (msg) => {
    if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) consoleErrors.push(msg.text());
  });
  p.on("pageerror", (err) => consoleErrors.push(String(err)));
  return { ctx, p, requests };
}

async function pickModel(p, name) {
  await p.goto(`${BASE}/`);
  await p.waitForFunction((n) => [...document.querySelectorAll("#model option")].some((o) => o.value === n), name);
  await p.selectOption("#model", name);
}

async function waitExplained(p) {
  await p.waitForFunction(() => {
    const o = document.getElementById("overlay");
    return !o.hidden && o.dataset.kind === "result" && o.width > 0 && /^Explained:/.test(document.getElementById("status").textContent);
  }, null, { timeout: TIMEOUT });
}

/** Drags on the photo from one point to another, given as fractions of its box. */
async function dragOnPhoto(p, [fx1, fy1], [fx2, fy2]) {
  const r = await p.$eval("#original-side", (i) => { const b = i.getBoundingClientRect(); return { x: b.x, y: b.y, w: b.width, h: b.height }; });
  await p.mouse.move(r.x + fx1 * r.w, r.y + fy1 * r.h);
  await p.mouse.down();
  await p.mouse.move(r.x + ((fx1 + fx2) / 2) * r.w, r.y + ((fy1 + fy2) / 2) * r.h, { steps: 4 });
  await p.mouse.move(r.x + fx2 * r.w, r.y + fy2 * r.h, { steps: 4 });
  await p.mouse.up();
}

const explainUrls = (requests, from) => requests.slice(from).filter((r) => r.url().includes("/explain")).map((r) => new URL(r.url()));

before(async () => {
  if (skip) return;
  await mkdir(ARTIFACTS, { recursive: true });
  models = await (await fetch(`${BASE}/models`)).json();
  browser = await launch();
});

after(async () => { await browser?.close(); });

test("segmentation: the classes with their pixel shares, a region dragged on the photo, its outline on the map", { skip }, async () => {
  const { ctx, p, requests } = await openPage();
  await pickModel(p, "segmentation");
  assert.match(await p.textContent("#model-info"), /segmentation: 3 classes per pixel/);
  await p.setInputFiles("#file", path.join(HEADS, "photo_32x24.png"));
  await p.waitForSelector("#predictions button");
  await p.waitForFunction(() => document.getElementById("photo").dataset.size === "32x24");

  // Every class, with its share of the output pixels, as /predict gives them.
  const api = await (await fetch(`${BASE}/predict?model=segmentation&top_k=3`, {
    method: "POST", headers: { "Content-Type": "image/png" }, body: await readFile(path.join(HEADS, "photo_32x24.png")),
  })).json();
  const items = await p.$$eval("#predictions button", (bs) => bs.map((b) => ({ index: Number(b.dataset.index), text: b.textContent })));
  assert.deepEqual(items.map((i) => i.index), api.predictions.map((x) => x.index));
  for (const [n, it] of items.entries()) {
    assert.ok(it.text.startsWith(api.predictions[n].label));
    assert.match(it.text, new RegExp(`${(api.predictions[n].score * 100).toFixed(1)}% of pixels$`));
  }
  assert.equal(await p.isVisible("#area"), true, "no region field");
  assert.equal(await p.isVisible("#stage-empty"), true);

  // Choose "blob", then drag a box on the photo: the class is explained over it.
  let from = requests.length;
  await p.click("#predictions button[data-index='1']");
  await waitExplained(p);
  assert.equal(explainUrls(requests, from)[0].searchParams.get("target"), "1");
  assert.equal(explainUrls(requests, from)[0].searchParams.has("region"), false);
  assert.match(await p.textContent("#facts"), /Regionthe pixels the model assigns to the class/);

  from = requests.length;
  await dragOnPhoto(p, [0.25, 0.25], [0.75, 0.75]);
  await p.waitForFunction(() => /Regionbox/.test(document.getElementById("facts").textContent), null, { timeout: TIMEOUT });
  await waitExplained(p);
  const sent = explainUrls(requests, from);
  assert.equal(sent.length, 1, `expected one explain request, saw ${sent.length}`);
  const q = sent[0].searchParams;
  assert.equal(q.get("target"), "1");
  const region = q.get("region").split(",").map(Number);
  // 25%..75% of a 32×24 photo, to whole pixels (the drawn pixels included).
  for (const [i, want] of [8, 6, 24, 18].entries()) assert.ok(Math.abs(region[i] - want) <= 1, `region ${region} is not about 8,6,24,18`);
  assert.equal(await p.inputValue("#area"), region.join(","));
  // The region is outlined on the photo and on the map.
  assert.equal(await p.getAttribute("#photo-marks .mark.area", "data-box"), region.join(","));
  assert.equal(await p.getAttribute("#stage-marks .mark.region", "data-box"), region.join(","));
  assert.deepEqual(await p.$eval("#overlay", (c) => [c.width, c.height]), [32, 24]);
  await p.screenshot({ path: path.join(ARTIFACTS, "heads-segmentation.png"), fullPage: true });

  // A typed region: the reference case's box gives its reference score.
  const cases = JSON.parse(await readFile(path.join(HEADS, "segmentation/reference/cases.json"), "utf8")).cases;
  const boxCase = cases.find((c) => c.name === "box/official");
  await p.fill("#area", boxCase.region.box.join(","));
  await p.dispatchEvent("#area", "change");
  await p.click("#explain");
  await p.waitForFunction((b) => document.getElementById("facts").textContent.includes(`box ${b}`), boxCase.region.box.join(","), { timeout: TIMEOUT });
  await waitExplained(p);
  assert.match(await p.textContent("#status"), new RegExp(`^Explained: blob \\(${(boxCase.target.score * 100).toFixed(1)}%\\)`));

  // "Use the model's own region" drops the region and explains again without one.
  from = requests.length;
  await p.click("#area-clear");
  await p.waitForFunction(() => /Regionthe pixels the model assigns/.test(document.getElementById("facts").textContent), null, { timeout: TIMEOUT });
  assert.equal(explainUrls(requests, from)[0].searchParams.has("region"), false);
  assert.equal(await p.inputValue("#area"), "");
  assert.equal(await p.locator("#photo-marks .mark").count(), 0);
  assert.equal(await p.locator("#stage-marks .mark").count(), 0);
  assert.equal(await p.textContent("#error"), "");
  await ctx.close();
});

test("embedding: a reference photo is required, sent as the part reference_image, and the similarity shown", { skip }, async () => {
  const { ctx, p, requests } = await openPage();
  await p.addInitScript(() => {
    window.__forms = [];
    const real = window.fetch;
    window.fetch = function (input, init) {
      if (init && init.body instanceof FormData) {
        window.__forms.push([...init.body.entries()].map(([k, v]) => [k, typeof v === "string" ? v : v.name]));
      }
      return real.apply(this, arguments);
    };
  });
  await pickModel(p, "embedding");
  assert.equal(await p.isVisible("#reference"), true, "no reference photo field");
  await p.setInputFiles("#file", path.join(HEADS, "photo_16x16.png"));
  await p.waitForFunction(() => /Embedded/.test(document.getElementById("status").textContent), null, { timeout: TIMEOUT });
  assert.match(await p.textContent("#predictions-note"), /An embedding of 8 values/);
  assert.equal(await p.locator("#predictions button").count(), 0);
  assert.equal(await p.isDisabled("#explain"), true, "Explain is enabled without a reference photo");
  assert.match(await p.textContent("#stage-empty"), /reference photo/);

  await p.setInputFiles("#reference", path.join(HEADS, "photo_20x20.png"));
  assert.equal(await p.isEnabled("#explain"), true);
  const from = requests.length;
  await p.click("#explain");
  await waitExplained(p);
  const sent = requests.slice(from).filter((r) => r.url().includes("/explain"));
  assert.equal(sent.length, 1);
  const q = new URL(sent[0].url()).searchParams;
  assert.equal(q.has("target"), false);
  assert.equal(q.has("top_k"), false);
  assert.match(sent[0].headers()["content-type"], /^multipart\/form-data; boundary=/);
  // The parts (Chromium does not hand a multipart body with files to the test: the page's
  // fetch is watched instead).
  assert.deepEqual(await p.evaluate(() => window.__forms.at(-1)), [["image", "photo_16x16.png"], ["reference_image", "photo_20x20.png"]]);
  // The reference case's similarity (the photo case: the vector case's is far from it).
  const cases = JSON.parse(await readFile(path.join(HEADS, "embedding/reference/cases.json"), "utf8")).cases;
  const want = cases.find((c) => c.name === "photo/official").target.score;
  assert.match(await p.textContent("#status"), new RegExp(`^Explained: .+ \\(similarity ${want.toFixed(3)}\\)\\.`));
  assert.deepEqual(await p.$eval("#overlay", (c) => [c.width, c.height]), [16, 16]);
  assert.equal(await p.textContent("#error"), "");
  await p.screenshot({ path: path.join(ARTIFACTS, "heads-embedding.png"), fullPage: true });
  await ctx.close();
});

test("small class heads (binary, grey, letterbox): as many classes as the head has, and a map at the photo's size", { skip }, async () => {
  const { ctx, p } = await openPage();
  const photos = { binary: "photo_16x16.png", grey: "photo_20x20.png", letterbox: "photo_24x11.png" };
  for (const [name, photo] of Object.entries(photos)) {
    const m = models.models.find((x) => x.name === name);
    if (!m || m.state !== "ready") { console.log(`# ${name}: not served, left out`); continue; }
    await pickModel(p, name);
    await p.setInputFiles("#file", path.join(HEADS, photo));
    await p.waitForSelector("#predictions button", { timeout: TIMEOUT });
    assert.equal(await p.locator("#predictions button").count(), Math.min(5, m.head.outputs), `${name}: classes listed`);
    assert.equal(await p.textContent("#error"), "", `${name}: ${await p.textContent("#error")}`);
    await p.click("#predictions li:first-child button");
    await waitExplained(p);
    const size = await p.$eval("#photo", (f) => f.dataset.size);
    assert.equal(await p.$eval("#overlay", (c) => `${c.width}x${c.height}`), size, `${name}: the map is not at the photo's size`);
  }
  await ctx.close();
});

test("detection (mocked server answers): boxes over the photo; a click explains a detection, a drag a box and class", { skip }, async () => {
  const { ctx, p, requests } = await openPage();
  // A detector package, as GET /models would describe one.
  const base = models.models.find((m) => m.state === "ready");
  const detector = { ...base, name: "detector", description: "mocked detector", labels: 3,
    head: { kind: "detection", outputs: 3, format: "yolo_v8", proposals: 84, side_inputs: [] } };
  await p.route("**/models", (route) => route.fulfill({ status: 200, contentType: "application/json",
    body: JSON.stringify({ ...models, default: "detector", models: [...models.models, detector] }) }));
  const detections = [
    { index: 2, label: "car", score: 0.91, box: [2, 3, 14, 12] },
    { index: 0, label: "person", score: 0.64, box: [18, 6, 30, 22] },
  ];
  const predictions = [{ index: 2, label: "car", score: 0.91 }, { index: 0, label: "person", score: 0.64 }, { index: 1, label: "bike", score: 0.1 }];
  await p.route("**/predict?*", (route) => route.fulfill({ status: 200, contentType: "application/json",
    body: JSON.stringify({ model: "detector", predictions, detections, timings_ms: { decode_ms: 0, inference_ms: 1 }, exif_orientation: "apply" }) }));
  const explained = [];
  await p.route("**/explain/stream?*", (route) => {
    const q = new URL(route.request().url()).searchParams;
    explained.push(q);
    const rank = q.has("detection") ? Number(q.get("detection")) : null;
    const box = rank !== null ? detections[rank].box : q.get("box").split(",").map(Number);
    const cls = rank !== null ? detections[rank].index : Number(q.get("target"));
    const label = ["person", "bike", "car"][cls];
    const data = Array.from({ length: 32 * 24 }, (_, i) => (i % 32) / 31);
    const doc = { model: "detector", method: "scorecam", preset: "official", predictions, detections,
      explanations: [{ target: { index: cls, label, score: 0.5 }, box, saliency: { width: 32, height: 24, data } }],
      stats: { forward_passes: 9, head_passes: 0, metric_passes: 0, skipped_channels: 0, shared_mask_channels: 0, batch_size: 4, cache: "miss" },
      timings_ms: { queue_ms: 0, features_ms: 1, masked_ms: 1, combine_ms: 0, metrics_ms: 0, total_ms: 2 }, exif_orientation: "apply" };
    route.fulfill({ status: 200, contentType: "text/event-stream", body: `event: result\ndata: ${JSON.stringify(doc)}\n\n` });
  });
  await p.goto(`${BASE}/`);
  await p.waitForFunction(() => document.getElementById("model").value === "detector");
  await p.setInputFiles("#file", path.join(HEADS, "photo_32x24.png"));
  await p.waitForSelector("#photo-marks button.mark.detection", { timeout: TIMEOUT });
  await p.waitForFunction(() => document.getElementById("photo").dataset.size === "32x24");

  // The detections' boxes, with their labels, over the photo (placed in its pixels).
  const marks = await p.$$eval("#photo-marks button.mark.detection", (bs) => bs.map((b) => ({
    box: b.dataset.box, text: b.textContent, label: b.getAttribute("aria-label"),
    rect: (() => { const r = b.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })(),
  })));
  assert.deepEqual(marks.map((m) => [m.box, m.text]), [["2,3,14,12", "car 91.0%"], ["18,6,30,22", "person 64.0%"]]);
  const photo = await p.$eval("#original-side", (i) => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; });
  const sx = photo[2] / 32, sy = photo[3] / 24;
  assert.ok(Math.abs(marks[1].rect[0] - (photo[0] + 18 * sx)) <= 1.5 && Math.abs(marks[1].rect[2] - 12 * sx) <= 1.5, "the box is not where the detection is");
  assert.equal(await p.locator("#predictions button").count(), 2, "the detections are not listed");

  // Clicking the second box explains that detection (no target, no top_k).
  await p.click("#photo-marks button.mark.detection[data-detection='1']");
  await waitExplained(p);
  let q = explained.at(-1);
  assert.equal(q.get("detection"), "1");
  assert.equal(q.has("target") || q.has("top_k") || q.has("box"), false);
  assert.equal(await p.getAttribute("#stage-marks .mark.box", "data-box"), "18,6,30,22");
  assert.match(await p.textContent("#stage-marks .mark.box"), /person/);
  assert.match(await p.textContent("#facts"), /Box18,6,30,22/);

  // Dragging a box with a chosen class explains box=…&target=C.
  await p.selectOption("#box-class", "1");
  await dragOnPhoto(p, [0.1, 0.5], [0.5, 0.9]);
  await p.waitForFunction(() => /bike/.test(document.getElementById("status").textContent), null, { timeout: TIMEOUT });
  await waitExplained(p);
  q = explained.at(-1);
  assert.equal(q.get("target"), "1");
  assert.equal(q.has("detection"), false);
  const box = q.get("box").split(",").map(Number);
  for (const [i, want] of [3, 12, 16, 22].entries()) assert.ok(Math.abs(box[i] - want) <= 1, `box ${box} is not about 3,12,16,22`);
  assert.equal(await p.getAttribute("#stage-marks .mark.box", "data-box"), box.join(","));
  assert.equal(await p.textContent("#error"), "");
  await p.screenshot({ path: path.join(ARTIFACTS, "heads-detection.png"), fullPage: true });
  await ctx.close();
  assert.ok(requests.length > 0);
});

test("no console errors on the head-kind pages", { skip }, async () => {
  assert.deepEqual(consoleErrors, []);
});
