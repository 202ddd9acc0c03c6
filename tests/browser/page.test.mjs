// End-to-end test of the explorer page (GET /) in headless Chromium, against a running server.
//
// Environment: SCORECAM_URL (the server, e.g. http://127.0.0.1:8080), CHROMIUM (default
// /usr/bin/chromium), ARTIFACT_DIR (screenshots; default ../../target/browser-artifacts),
// SAMPLE (default ../../samples/chelsea.png). scripts/ci/browser_test.sh sets them up.
//
// The steps share one page and run in order; each asserts what it claims.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BASE = (process.env.SCORECAM_URL || "").replace(/\/$/, "");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.resolve(process.env.ARTIFACT_DIR || path.join(root, "target/browser-artifacts"));
const SAMPLE = path.resolve(process.env.SAMPLE || path.join(root, "samples/chelsea.png"));
// ImageNet-1k's domestic and wild cat classes: tabby, tiger cat, Persian, Siamese, Egyptian cat,
// cougar, lynx, (leopard…) — the sample is a cat, its top class must be one of the first five.
const CAT_CLASSES = new Set([281, 282, 283, 284, 285]);
const EXPLAIN_TIMEOUT = 180_000;

assert.ok(BASE, "SCORECAM_URL must name the server under test");

let browser;
let context;
let page;
let sample;          // Buffer of the sample image
let sampleSize;      // {width, height} from its PNG header
let registry;        // GET /methods: the method registry the page must follow
let channels;        // feature channels of the default model (progress totals are counted against them)
const consoleErrors = [];
const requests = [];  // URLs the page requested, in order

/** Width and height from a PNG's IHDR. */
function pngSize(buf) {
  assert.equal(buf.subarray(0, 8).toString("hex"), "89504e470d0a1a0a", "not a PNG");
  assert.equal(buf.subarray(12, 16).toString("latin1"), "IHDR");
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

/** GET /methods, checked against the contract's shape (so a half-done registry is reported plainly). */
async function fetchRegistry() {
  const response = await fetch(`${BASE}/methods`);
  assert.equal(response.status, 200, `GET /methods answered ${response.status}`);
  const doc = await response.json();
  assert.ok(Array.isArray(doc) && doc.length > 0, `GET /methods is not a non-empty array: ${JSON.stringify(doc).slice(0, 200)}`);
  for (const m of doc) {
    assert.equal(typeof m.name, "string", `a method without a name: ${JSON.stringify(m)}`);
    assert.equal(typeof m.summary, "string", `${m.name}: no summary`);
    assert.ok(Array.isArray(m.parameters), `${m.name}: no parameters array`);
    for (const p of m.parameters) {
      const where = `${m.name}.${p.name}`;
      assert.equal(typeof p.name, "string", `${m.name}: a parameter without a name`);
      assert.ok(["integer", "number", "choice", "seed"].includes(p.kind), `${where}: kind ${JSON.stringify(p.kind)}`);
      assert.equal(typeof p.default, "string", `${where}: default ${JSON.stringify(p.default)} is not a string`);
      assert.equal(typeof p.help, "string", `${where}: no help`);
      if (p.kind === "choice") {
        assert.ok(Array.isArray(p.choices) && p.choices.length > 0, `${where}: a choice without choices`);
      } else {
        assert.equal(p.choices, undefined, `${where}: choices on a ${p.kind}`);
      }
    }
  }
  return doc;
}

const param = (method, name) => registry.find((m) => m.name === method)?.parameters.find((p) => p.name === name);

/** The method fields the page shows: [{id, name, tag, type, ...}] in page order. */
function shownParams(p) {
  return p.$$eval("#params [data-param]:is(input, select)", (els) => els.map((e) => ({
    id: e.id, name: e.dataset.param, tag: e.tagName.toLowerCase(), type: e.type,
    min: e.getAttribute("min"), max: e.getAttribute("max"), step: e.getAttribute("step"),
    placeholder: e.getAttribute("placeholder"), value: e.value,
    options: e.tagName === "SELECT" ? [...e.options].map((o) => o.value) : null,
    label: e.labels && e.labels.length ? e.labels[0].textContent : null,
    visible: e.offsetParent !== null,
  })));
}

/** Parses Prometheus text into {name{labels}: value}. */
async function metrics() {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function sum(m, prefix) {
  let s = 0;
  for (const [k, v] of m) if (k === prefix || k.startsWith(prefix + "{")) s += v;
  return s;
}

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Records the console errors and CSP violations of a page. */
function watch(p) {
  p.on("console", (msg) => {
    // A failed fetch (e.g. the expected 415) is logged as "Failed to load resource"; that is not a page error.
    if (msg.type() === "error" && !/Failed to load resource/.test(msg.text())) consoleErrors.push(msg.text());
  });
  p.on("pageerror", (err) => consoleErrors.push(String(err)));
  p.on("request", (r) => requests.push(`${r.method()} ${r.url()}`));
}

const cspViolations = [];

/** A browser context whose pages report CSP violations (an external or blocked resource). */
async function newContext(viewport) {
  const ctx = await browser.newContext({ viewport, deviceScaleFactor: 1, acceptDownloads: true });
  await ctx.exposeBinding("__cspViolation", (_, text) => { cspViolations.push(text); });
  await ctx.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return ctx;
}

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  sample = await readFile(SAMPLE);
  sampleSize = pngSize(sample);
  browser = await launch();
  context = await newContext({ width: 1280, height: 900 });
  page = await context.newPage();
  watch(page);
  // Intercept file choosers from the start: enabling it lazily races the key press that opens one.
  page.on("filechooser", () => {});
  await page.evaluate(() => 1);
});

after(async () => {
  await browser?.close();
});

test("the page loads under its CSP with every control labelled and the models listed", async () => {
  const response = await page.goto(`${BASE}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-type"], /^text\/html/);
  assert.match(response.headers()["content-security-policy"], /default-src 'none'/);
  assert.equal(await page.title(), "scorecam — explain an image classifier");

  // The model selector is filled from GET /models, with the server's default selected.
  const models = await (await fetch(`${BASE}/models`)).json();
  await page.waitForFunction(() => document.querySelector("#model option")?.value !== "");
  assert.equal(await page.inputValue("#model"), models.default);
  const options = await page.$$eval("#model option", (os) => os.map((o) => o.value));
  assert.deepEqual(options, models.models.map((m) => m.name));
  // Approximate (quantised) packages say so in the list and under it, with their fidelity.
  const texts = await page.$$eval("#model option", (os) => os.map((o) => o.textContent));
  models.models.forEach((m, i) => assert.equal(/approximate/.test(texts[i]), m.approximate === true, texts[i]));
  assert.equal(await page.isHidden("#model-approx"), true, "the exact default model is shown as approximate");
  const approx = models.models.find((m) => m.approximate);
  if (approx) {
    await page.selectOption("#model", approx.name);
    const note = await page.textContent("#model-approx");
    assert.match(note, new RegExp(`^Approximate: int8 version of ${approx.quantization.reference}`));
    assert.ok(note.includes(approx.quantization.fidelity.pearson_mean.toFixed(3)), note);
    await page.selectOption("#model", models.default);
    assert.equal(await page.isHidden("#model-approx"), true);
  }

  const model = models.models.find((m) => m.name === models.default);
  channels = Number(model?.target_layer?.channels || model?.channels);
  assert.ok(channels > 0, "GET /models gives no channel count for the default model");

  // The method selector is filled from GET /methods: value = name, text = the summary's title
  // (before its colon), the whole summary as the option's title and under the select; in its order.
  registry = await fetchRegistry();
  await page.waitForFunction(() => document.getElementById("method").dataset.source);
  assert.equal(await page.$eval("#method", (s) => s.dataset.source), "registry", "the page fell back instead of using GET /methods");
  const methodOptions = await page.$$eval("#method option", (os) => os.map((o) => ({ name: o.value, text: o.textContent, title: o.title })));
  const titleOf = (m) => (m.summary.includes(":") ? m.summary.slice(0, m.summary.indexOf(":")).trim() : m.summary) || m.name;
  assert.deepEqual(methodOptions, registry.map((m) => ({ name: m.name, text: titleOf(m), title: m.summary })));
  assert.ok(registry.some((m) => m.name === "eigencam"), "GET /methods does not list eigencam");
  assert.equal(await page.inputValue("#method"), "scorecam");
  // No method's text is cut off in the select: each fits its box (less the arrow) in the select's font.
  const cut = await page.$eval("#method", (s) => {
    const cs = getComputedStyle(s);
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 24;
    return [...s.options].filter((o) => ctx.measureText(o.textContent).width > room).map((o) => o.textContent);
  });
  assert.deepEqual(cut, [], "method names cut off in the select");
  // The preset's label lists its choices (the registry's help); its hint does not repeat them.
  const presetHelp = param("scorecam", "preset").help;
  const presetHint = await page.textContent("#param-hint-preset");
  for (const c of param("scorecam", "preset").choices) {
    if (presetHelp.includes(c)) assert.ok(!presetHint.includes(c) || c === param("scorecam", "preset").default,
      `the preset hint repeats "${c}" from its label: ${presetHint}`);
  }
  assert.match(await page.textContent("#status"), /^$/, "the status area reports a problem with the methods");

  // The other selectors carry exactly the contract's values (the preset's from the registry).
  const values = (sel) => page.$$eval(`${sel} option`, (os) => os.map((o) => o.value));
  assert.deepEqual(await values("#preset"), param("scorecam", "preset").choices);
  assert.equal(await page.inputValue("#preset"), param("scorecam", "preset").default);
  assert.deepEqual(await values("#colormap"), ["jet", "viridis", "inferno", "gray"]);

  // Every form control and button has an accessible name.
  const unlabelled = await page.$$eval("input, select, button, [role=button]", (els) =>
    els.filter((e) => {
      if (e.getAttribute("aria-label") || e.getAttribute("aria-labelledby")) return false;
      if (e.labels && e.labels.length) return false;
      return !(e.textContent || "").trim();
    }).map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, []);
  // And the accessibility tree agrees for the main ones.
  for (const name of ["Image file", "Model", "Method", param("scorecam", "preset").help, "Colour map", "API key (optional)"]) {
    assert.equal(await page.getByLabel(name, { exact: true }).count(), 1, `no control labelled ${name}`);
  }
  assert.equal(await page.getByRole("slider", { name: /Heatmap opacity/ }).count(), 1);
  for (const name of ["Explain", "Cancel", "Download PNG", "Download JSON"]) {
    assert.equal(await page.getByRole("button", { name, exact: true }).count(), 1, `no button ${name}`);
  }
  // The CSP watch works: an external image is blocked and reported (then forgotten).
  await page.evaluate(() => { const i = new Image(); i.src = "https://example.invalid/x.png"; });
  for (let i = 0; i < 50 && cspViolations.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(cspViolations, ["img-src https://example.invalid/x.png"]);
  cspViolations.length = 0;
  const probe = consoleErrors.findIndex((t) => t.includes("example.invalid"));
  if (probe >= 0) consoleErrors.splice(probe, 1);

  // Nothing to explain yet, and nothing to download.
  assert.equal(await page.isDisabled("#explain"), true);
  assert.equal(await page.isDisabled("#cancel"), true);
  assert.equal(await page.isDisabled("#download-json"), true, "Download JSON is enabled before any result");
  assert.equal(await page.isDisabled("#download-png"), true, "Download PNG is enabled before any result");
  // The saliency pane is an empty placeholder, not a photo.
  assert.equal(await page.isVisible("#stage-empty"), true);
  assert.equal(await page.isVisible("#original"), false);
  assert.equal(await page.isVisible("#overlay"), false);
});

test("the page has an icon: /favicon.ico and /favicon.svg answer 200 with an SVG", async () => {
  assert.equal(await page.getAttribute('link[rel="icon"]', "href"), "/favicon.svg");
  for (const route of ["/favicon.ico", "/favicon.svg"]) {
    const r = await fetch(`${BASE}${route}`);
    assert.equal(r.status, 200, `${route} answered ${r.status}`);
    assert.match(r.headers.get("content-type"), /^image\/svg\+xml/);
    assert.match(await r.text(), /^<svg[\s\S]*<\/svg>\s*$/);
  }
  // And the browser can draw it (the page's CSP allows it).
  const size = await page.evaluate(async () => {
    const i = new Image();
    i.src = "/favicon.svg";
    await i.decode();
    return [i.naturalWidth, i.naturalHeight];
  });
  assert.ok(size[0] > 0 && size[1] > 0);
});

test("the drop zone is the first stop for the keyboard, shows its focus, and Enter or Space opens the picker", async () => {
  await page.locator("body").focus();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "drop");
  const outline = await page.$eval("#drop", (e) => {
    const s = getComputedStyle(e);
    return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  assert.notEqual(outline.style, "none", "focused drop zone has no visible outline");
  assert.ok(outline.width >= 2, `focus outline is ${outline.width}px`);

  // Space opens the picker (left unanswered), then Enter opens it and we choose the sample.
  const space = page.waitForEvent("filechooser", { timeout: 5000 });
  await page.keyboard.press(" ");
  assert.equal((await space).isMultiple(), false);
  const enter = page.waitForEvent("filechooser", { timeout: 5000 });
  await page.keyboard.press("Enter");
  await (await enter).setFiles(SAMPLE);
});

test("choosing the sample shows its preview and its top five classes, a cat first", async () => {
  await page.waitForSelector("#predictions button", { timeout: 60_000 });
  const items = await page.$$eval("#predictions button", (bs) =>
    bs.map((b) => ({ index: Number(b.dataset.index), text: b.textContent, pressed: b.getAttribute("aria-pressed") })));
  assert.equal(items.length, 5);
  for (const it of items) assert.match(it.text, /\d+\.\d%$/, `no probability in "${it.text}"`);
  const top = items[0];
  assert.ok(CAT_CLASSES.has(top.index), `top class ${top.index} (${top.text}) is not a cat class`);
  assert.match(top.text.toLowerCase(), /cat|tabby|persian|siamese/);
  assert.equal(top.pressed, "true", "the top class is not the default target");
  // The list agrees with the API's own answer.
  const api = await (await fetch(`${BASE}/predict?top_k=5`, {
    method: "POST", headers: { "Content-Type": "image/png" }, body: sample,
  })).json();
  assert.deepEqual(items.map((i) => i.index), api.predictions.map((p) => p.index));
  assert.ok(items[0].text.startsWith(api.predictions[0].label));

  const preview = await page.$eval("#original-side", (img) => ({ w: img.naturalWidth, h: img.naturalHeight, visible: img.offsetParent !== null }));
  assert.deepEqual(preview, { w: sampleSize.width, h: sampleSize.height, visible: true });
  // Before an explanation the saliency pane shows a placeholder, not the plain photo as if it were a map.
  assert.equal(await page.isVisible("#stage-empty"), true);
  assert.match(await page.textContent("#stage-empty"), /No saliency map yet/);
  assert.equal(await page.isVisible("#original"), false, "the photo stands in the saliency pane before any map");
  assert.equal(await page.isVisible("#overlay"), false);
  assert.equal(await page.isEnabled("#explain"), true);
  assert.equal(await page.isDisabled("#download-json"), true, "Download JSON is enabled before any result");
  assert.match(await page.textContent("#status"), /Classified: /);
});

/** Waits for the final map of an explanation (partial maps come first, at the target layer's size). */
async function waitExplained(p = page) {
  await p.waitForFunction(() => {
    const o = document.getElementById("overlay");
    return !o.hidden && o.dataset.kind === "result" && o.width > 0 && /^Explained:/.test(document.getElementById("status").textContent);
  }, null, { timeout: EXPLAIN_TIMEOUT });
}

/** How many pixels of the overlay canvas differ from a PNG (base64) of the same size, and the size. */
async function overlayDiff(p, pngBase64) {
  return p.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
    const o = document.getElementById("overlay");
    const c = document.createElement("canvas");
    c.width = bitmap.width; c.height = bitmap.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const want = ctx.getImageData(0, 0, c.width, c.height).data;
    const got = o.getContext("2d").getImageData(0, 0, o.width, o.height).data;
    let differ = 0;
    if (want.length === got.length) for (let i = 0; i < want.length; i += 4) {
      if (want[i] !== got[i] || want[i + 1] !== got[i + 1] || want[i + 2] !== got[i + 2]) differ++;
    }
    return { differ, png: [bitmap.width, bitmap.height], canvas: [o.width, o.height] };
  }, pngBase64);
}

/** The server's own heatmap of the page's last explanation (a result-cache hit), in base64. */
async function serverHeatmap(target, colormap) {
  const r = await fetch(`${BASE}/explain?format=heatmap&target=${target}&colormap=${colormap}&method=scorecam&preset=official`, {
    method: "POST", headers: { "Content-Type": "image/png" }, body: sample,
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-scorecam-cache"), "hit", "the server computed the map again");
  return Buffer.from(await r.arrayBuffer()).toString("base64");
}

/** Starts recording every state of the progress bar and its text. */
async function recordProgress() {
  await page.evaluate(() => {
    window.__progress = [];
    const bar = document.getElementById("progress");
    const text = document.getElementById("progress-text");
    const snap = () => window.__progress.push({
      value: bar.hasAttribute("value") ? Number(bar.getAttribute("value")) : null,
      max: Number(bar.getAttribute("max")),
      text: text.textContent,
      hidden: bar.hidden,
    });
    window.__progressObserver?.disconnect();
    window.__progressObserver = new MutationObserver(snap);
    window.__progressObserver.observe(bar, { attributes: true });
    window.__progressObserver.observe(text, { childList: true, characterData: true, subtree: true });
  });
}

let explainedPasses = 0; // total masked passes of the first explanation

test("clicking the top class streams progress and shows the heatmap over the image at its size", async () => {
  await recordProgress();
  const before = requests.length;
  await page.click("#predictions li:first-child button");
  await waitExplained();

  const sent = requests.slice(before).filter((r) => r.includes("/explain"));
  assert.equal(sent.length, 1, `expected one explain request, saw ${sent.join(", ")}`);
  const url = new URL(sent[0].split(" ")[1]);
  assert.equal(sent[0].split(" ")[0], "POST");
  assert.equal(url.pathname, "/explain/stream");
  // The page asks for the map's values (and colours them itself).
  assert.equal(url.searchParams.get("format"), "json");
  assert.equal(url.searchParams.get("resolution"), "input");
  assert.equal(url.searchParams.get("method"), "scorecam");
  assert.equal(url.searchParams.get("preset"), "official");
  assert.equal(url.searchParams.has("colormap"), false);
  const top = await page.$eval("#predictions li:first-child button", (b) => Number(b.dataset.index));
  assert.equal(Number(url.searchParams.get("target")), top);

  const progress = await page.evaluate(() => window.__progress);
  const counted = progress.filter((p) => p.value !== null && p.max > 1 && p.value > 0 && p.value <= p.max);
  assert.ok(counted.length >= 1, `no progress update with 0 < done <= total: ${JSON.stringify(progress.slice(0, 20))}`);
  assert.ok(progress.some((p) => /^\d+ \/ \d+ passes/.test(p.text) && Number(p.text.split(" ")[0]) > 0),
    "the progress text never said how many passes were done");
  explainedPasses = Math.max(...counted.map((p) => p.max));
  // The bar goes away when the result is in.
  assert.equal(await page.$eval("#progress", (b) => b.hidden), true);

  const overlay = await page.$eval("#overlay", (c) => ({ w: c.width, h: c.height }));
  assert.deepEqual(overlay, { w: sampleSize.width, h: sampleSize.height }, "the heatmap is not at the upload's size");
  assert.equal(await page.isVisible("#stage-empty"), false);
  // Stacked: the heatmap covers the original's box exactly.
  const boxes = await page.evaluate(() => ["original", "overlay"].map((id) => {
    const r = document.getElementById(id).getBoundingClientRect();
    return [Math.round(r.x), Math.round(r.y), Math.round(r.width), Math.round(r.height)];
  }));
  assert.deepEqual(boxes[0], boxes[1], "the heatmap is not over the original");
  // ...and the untouched photo is shown next to it.
  const side = await page.$eval("#original-side", (i) => ({
    w: i.naturalWidth, h: i.naturalHeight, visible: !i.closest("figure").hidden,
    left: i.getBoundingClientRect().left, stageLeft: document.getElementById("stage").getBoundingClientRect().left,
  }));
  assert.ok(side.visible, "the original is not shown beside the overlay");
  assert.deepEqual([side.w, side.h], [224, 224]);
  assert.ok(side.left < side.stageLeft, "the original is not beside (left of) the overlay");
  assert.match(await page.textContent("#status"), /Explained: .+ \(\d+\.\d%\)/);
  assert.match(await page.textContent("#facts"), /Forward passes\d+/);
  assert.equal(await page.$eval("#facts", (f) => f.dataset.cache), "miss");
  assert.equal(await page.isEnabled("#download-json"), true);
  assert.equal(await page.textContent("#error"), "");
  // The map sharpened live: partial maps were painted before the result replaced them.
  const partials = Number(await page.getAttribute("#stage", "data-partials"));
  assert.ok(partials >= 1, `no partial map arrived before the result (${partials})`);
  await page.screenshot({ path: path.join(ARTIFACTS, "page.png"), fullPage: true });
});

test("the opacity slider changes the heatmap's opacity without a request", async () => {
  const before = requests.length;
  await page.fill("#opacity", "80");
  assert.equal(await page.$eval("#overlay", (o) => getComputedStyle(o).opacity), "0.8");
  assert.equal(await page.textContent("#opacity-value"), "80%");
  await page.focus("#opacity");
  await page.keyboard.press("ArrowLeft");
  assert.equal(await page.$eval("#overlay", (o) => getComputedStyle(o).opacity), "0.79");
  assert.equal(requests.length, before, `the slider made requests: ${requests.slice(before).join(", ")}`);
});

test("changing the colour map recolours the map at once, without a request, in the server's colours", async () => {
  const target = await page.$eval("#predictions button[aria-pressed=true]", (b) => Number(b.dataset.index));
  // The page's jet map is the server's jet heatmap, pixel for pixel.
  let diff = await overlayDiff(page, await serverHeatmap(target, "jet"));
  assert.deepEqual(diff, { differ: 0, png: [sampleSize.width, sampleSize.height], canvas: [sampleSize.width, sampleSize.height] });
  for (const cmap of ["viridis", "inferno", "gray", "jet"]) {
    const before = requests.length;
    await page.selectOption("#colormap", cmap);
    // At once: the canvas is repainted in the change event itself.
    assert.equal(await page.$eval("#overlay", (o) => o.dataset.colormap), cmap);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(requests.length, before, `the colour map change made requests: ${requests.slice(before).join(", ")}`);
    diff = await overlayDiff(page, await serverHeatmap(target, cmap));
    assert.equal(diff.differ, 0, `${cmap}: ${diff.differ} pixels differ from the server's heatmap`);
  }
  assert.equal(await page.$eval("#overlay", (o) => getComputedStyle(o).opacity), "0.79", "the opacity was lost");
});

test("a repeated explanation comes from the server's result cache, and the page says so", async () => {
  const before = requests.length;
  await page.click("#explain");
  await page.waitForFunction(() => /result cache/.test(document.getElementById("status").textContent), null, { timeout: EXPLAIN_TIMEOUT });
  await waitExplained();
  assert.equal(requests.slice(before).filter((r) => r.includes("/explain")).length, 1);
  assert.match(await page.textContent("#status"), /^Explained: .+ \(\d+\.\d%\)\. Answered from the server's result cache: no passes were run\.$/);
  assert.equal(await page.$eval("#facts", (f) => f.dataset.cache), "hit");
  const facts = await page.textContent("#facts");
  assert.match(facts, /from the server's result cache/);
  assert.doesNotMatch(facts, /Forward passes/, "a cache hit shows its zero pass count as if it ran");
  assert.equal(await page.isVisible("#facts .note-cache"), true);
});

test("Download PNG saves the composed image at the upload's size", async () => {
  const downloading = page.waitForEvent("download", { timeout: 30_000 });
  await page.click("#download-png");
  const download = await downloading;
  assert.match(download.suggestedFilename(), /\.png$/);
  const bytes = await readFile(await download.path());
  assert.deepEqual(pngSize(bytes), sampleSize);
});

test("Download JSON saves the API's JSON document of the last explanation, with no new request", async () => {
  const target = await page.$eval("#predictions button[aria-pressed=true]", (b) => Number(b.dataset.index));
  const before = requests.length;
  const downloading = page.waitForEvent("download", { timeout: EXPLAIN_TIMEOUT });
  await page.click("#download-json");
  const download = await downloading;
  assert.match(download.suggestedFilename(), /\.json$/);
  const doc = JSON.parse(await readFile(await download.path(), "utf8"));
  assert.equal(doc.model, "efficientnet-lite0");
  assert.equal(doc.method, "scorecam");
  assert.equal(doc.preset, "official");
  assert.equal(doc.predictions.length >= 1, true);
  assert.equal(doc.explanations.length, 1);
  const [e] = doc.explanations;
  assert.equal(e.target.index, target);
  assert.equal(e.saliency.width * e.saliency.height, e.saliency.data.length);
  assert.deepEqual([e.saliency.width, e.saliency.height], [sampleSize.width, sampleSize.height]); // resolution=input
  assert.ok(e.saliency.data.every((v) => v >= 0 && v <= 1));
  assert.ok(Math.max(...e.saliency.data) > 0, "the saliency map is all zeros");
  // The last explanation was the repeat, answered by the result cache with no pass.
  assert.equal(doc.stats.cache, "hit");
  assert.equal(doc.stats.forward_passes, 0);
  await page.waitForFunction(() => document.getElementById("status").textContent === "JSON saved.");
  assert.deepEqual(requests.slice(before).filter((r) => !r.startsWith("GET blob:")), [], "Download JSON made a request");
});

test("Cancel stops a running explanation in the page and on the server", async () => {
  const m0 = await metrics();
  const passes0 = sum(m0, "scorecam_masked_passes_total");
  const cancelled0 = m0.get("scorecam_cancelled_jobs_total");
  assert.equal(typeof cancelled0, "number", "the server has no scorecam_cancelled_jobs_total metric");
  await recordProgress();
  // A preset this photo was not explained with yet, so the result cache cannot answer it.
  await page.selectOption("#preset", "torchcam");
  await page.click("#explain");
  // Wait until masked passes are under way, then cancel.
  await page.waitForFunction(() => /^[1-9]\d* \/ \d+ passes/.test(document.getElementById("progress-text").textContent),
    null, { timeout: EXPLAIN_TIMEOUT, polling: 20 });
  // ...and until a partial map is on the image.
  await page.waitForFunction(() => Number(document.getElementById("stage").dataset.partials || 0) >= 1,
    null, { timeout: EXPLAIN_TIMEOUT, polling: 20 });
  const planned = await page.$eval("#progress", (b) => Number(b.getAttribute("max")));
  await page.click("#cancel");
  await page.waitForFunction(() => /Cancelled/.test(document.getElementById("status").textContent), null, { timeout: 5000 });
  assert.equal(await page.$eval("#progress", (b) => b.hidden), true);
  assert.equal(await page.isDisabled("#cancel"), true);
  assert.equal(await page.textContent("#error"), "", "cancelling showed an error");
  // Cancel keeps the last partial map on the image, and says how far it got.
  const kept = await page.$eval("#overlay", (o) => ({ hidden: o.hidden, kind: o.dataset.kind, w: o.width }));
  assert.deepEqual(kept, { hidden: false, kind: "partial", w: 7 }, "the partial map did not stay");
  // The partial map is recoloured too, with no request.
  const before = requests.length;
  await page.selectOption("#colormap", "gray");
  const px = await page.$eval("#overlay", (o) => [...o.getContext("2d").getImageData(3, 3, 1, 1).data]);
  assert.ok(px[0] === px[1] && px[1] === px[2], `a gray partial map pixel is ${px}`);
  await page.selectOption("#colormap", "jet");
  assert.equal(requests.length, before);
  assert.match(await page.textContent("#status"), /Cancelled; showing the partial map \(\d+ of \d+ passes, \d+% of the activation mass\)/);
  await page.screenshot({ path: path.join(ARTIFACTS, "partial.png"), fullPage: true });

  // The server lets the job go: nothing left running, and it stopped short of the planned passes.
  let m;
  const deadline = Date.now() + 15_000;
  for (;;) {
    m = await metrics();
    if (sum(m, "scorecam_jobs_running") === 0 && sum(m, "scorecam_queue_depth") === 0) break;
    assert.ok(Date.now() < deadline, "the cancelled job is still running on the server");
    await new Promise((r) => setTimeout(r, 100));
  }
  // Let any batch already in flight land before counting.
  await new Promise((r) => setTimeout(r, 500));
  m = await metrics();
  const ran = sum(m, "scorecam_masked_passes_total") - passes0;
  assert.ok(planned > 0);
  assert.ok(ran < planned, `the server ran ${ran} of ${planned} planned passes after the cancel`);
  assert.equal(m.get("scorecam_cancelled_jobs_total"), cancelled0 + 1, "scorecam_cancelled_jobs_total did not count the cancel");
  const ready = await fetch(`${BASE}/readyz`);
  assert.equal(ready.status, 200);
  console.log(`# cancelled after ${ran} of ${planned} masked passes; scorecam_cancelled_jobs_total counted it`);
  await page.selectOption("#preset", param("scorecam", "preset").default);
});

test("switching methods shows exactly that method's parameter fields, as the registry describes them", async () => {
  const everyName = new Set(registry.flatMap((m) => m.parameters.map((p) => p.name)));
  for (const m of registry) {
    await page.selectOption("#method", m.name);
    const shown = await shownParams(page);
    assert.deepEqual(shown.map((f) => f.id), m.parameters.map((p) => p.name), `${m.name}: fields ${shown.map((f) => f.id)}`);
    assert.equal(await page.textContent("#method-summary"), m.summary);
    for (const [i, p] of m.parameters.entries()) {
      const f = shown[i];
      const where = `${m.name}.${p.name}`;
      assert.ok(f.visible, `${where} is not visible`);
      assert.equal(f.label, p.help, `${where}: labelled ${f.label}`);
      assert.equal(await page.getByLabel(p.help, { exact: true }).count(), 1, `${where}: no single control labelled ${p.help}`);
      if (p.kind === "choice") {
        assert.equal(f.tag, "select", `${where}: a choice shown as ${f.tag}`);
        assert.deepEqual(f.options, p.choices);
        assert.equal(f.value, p.default);
      } else {
        assert.equal(f.tag, "input");
        assert.equal(f.type, "number", `${where}: a ${p.kind} shown as type=${f.type}`);
        assert.equal(f.placeholder, p.default ? `default: ${p.default}` : "server's default");
        assert.equal(f.value, "", `${where}: not empty (the server's default applies)`);
        assert.equal(f.step, p.kind === "number" ? "any" : "1");
        const min = p.minimum ?? p.exclusive_minimum ?? (p.kind === "seed" ? 0 : undefined);
        assert.equal(f.min, min === undefined ? null : String(min), `${where}: min`);
        assert.equal(f.max, p.maximum === undefined ? null : String(p.maximum), `${where}: max`);
      }
    }
    // The other methods' fields are not in the page at all.
    const own = new Set(m.parameters.map((p) => p.name));
    for (const name of everyName) {
      if (own.has(name)) continue;
      assert.equal(await page.locator(`#params [data-param="${name}"]`).count(), 0, `${m.name} shows ${name}`);
    }
  }
  // What was typed survives a round trip to another method.
  const numeric = registry.find((m) => m.parameters.some((p) => p.kind === "integer"));
  if (numeric && registry.length > 1) {
    const p = numeric.parameters.find((x) => x.kind === "integer");
    await page.selectOption("#method", numeric.name);
    await page.fill(`#${p.name}`, String(p.minimum ?? 1));
    await page.selectOption("#method", registry.find((m) => m !== numeric).name);
    await page.selectOption("#method", numeric.name);
    assert.equal(await page.inputValue(`#${p.name}`), String(p.minimum ?? 1));
    await page.fill(`#${p.name}`, "");
  }
  await page.selectOption("#method", "scorecam");
  assert.equal(await page.inputValue("#preset"), param("scorecam", "preset").default);
});

test("Ablation-CAM: the method selector sends the method without a preset", async () => {
  await page.selectOption("#method", "ablationcam");
  // Only the selected method's fields exist (Ablation-CAM's, per the registry).
  assert.deepEqual((await shownParams(page)).map((f) => f.id), registry.find((m) => m.name === "ablationcam").parameters.map((p) => p.name));
  for (const id of ["preset", "samples", "steps"]) assert.equal(await page.locator(`#${id}`).count(), 0, `#${id} is still in the page`);
  const before = requests.length;
  await page.click("#explain");
  await page.waitForFunction(() => /Explained: /.test(document.getElementById("status").textContent)
    && /ablationcam/.test(document.getElementById("facts").textContent), null, { timeout: EXPLAIN_TIMEOUT });
  const sent = requests.slice(before).filter((r) => r.includes("/explain"));
  assert.equal(sent.length, 1);
  const url = new URL(sent[0].split(" ")[1]);
  assert.equal(url.searchParams.get("method"), "ablationcam");
  assert.equal(url.searchParams.has("preset"), false);
  assert.deepEqual([...url.searchParams.keys()].sort(), ["format", "method", "model", "resolution", "target"]);
  assert.deepEqual(await page.$eval("#overlay", (c) => [c.width, c.height]), [sampleSize.width, sampleSize.height]);
  assert.equal(await page.textContent("#error"), "");
  assert.equal(await page.isVisible("#repeat-hint"), false, "Ablation-CAM got the long-method hint");
  await page.selectOption("#method", "scorecam");
  assert.equal(await page.isEnabled("#preset"), true);
  assert.equal(await page.inputValue("#preset"), param("scorecam", "preset").default);
});

test("a method with more passes than channels gets the long-method hint from its real plan", async () => {
  const sscam = registry.find((m) => m.name === "sscam");
  assert.ok(sscam?.parameters.some((p) => p.name === "samples"), "the registry has no sscam.samples");
  await page.selectOption("#method", "sscam");
  assert.equal(await page.isVisible("#repeat-hint"), false, "a hint before any run");
  await page.fill("#samples", "5");
  const before = requests.length;
  await page.click("#explain");
  // Once the plan is known (more passes than the model has channels), cancel: the plan is all we need.
  await page.waitForFunction((c) => {
    const m = /^\d+ \/ (\d+) passes/.exec(document.getElementById("progress-text").textContent);
    return m && Number(m[1]) > c;
  }, channels, { timeout: EXPLAIN_TIMEOUT, polling: 20 });
  const planned = await page.$eval("#progress", (b) => Number(b.getAttribute("max")));
  await page.click("#cancel");
  await page.waitForFunction(() => /Cancelled/.test(document.getElementById("status").textContent), null, { timeout: 5000 });
  const sent = requests.slice(before).filter((r) => r.includes("/explain"));
  assert.equal(sent.length, 1);
  const q = new URL(sent[0].split(" ")[1]).searchParams;
  assert.deepEqual([...q.keys()].sort(), ["format", "method", "model", "resolution", "samples", "target"]);
  assert.equal(q.get("samples"), "5");
  assert.equal(await page.isVisible("#repeat-hint"), true);
  assert.match(await page.textContent("#repeat-hint"),
    new RegExp(`^Last time this method planned ${planned} masked passes for the model's ${channels} channels, more than one pass per channel: .*time limit; a lower .*samples.* is faster\\.$`));
  // Score-CAM plans at most one pass per channel: no hint there.
  await page.fill("#samples", "");
  await page.selectOption("#method", "scorecam");
  assert.equal(await page.isVisible("#repeat-hint"), false);
  assert.equal(await page.textContent("#error"), "");
  console.log(`# sscam with 5 samples planned ${planned} passes for ${channels} channels`);
});

test("an image of another size, dropped on the drop zone, gets its heatmap at that size", async () => {
  // A 320×200 copy of the sample, drawn by the browser itself.
  const wide = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = 320; c.height = 200;
    c.getContext("2d").drawImage(img, 0, 0, 320, 200);
    const blob = await new Promise((r) => c.toBlob(r, "image/png"));
    const buf = new Uint8Array(await blob.arrayBuffer());
    let s = "";
    for (const x of buf) s += String.fromCharCode(x);
    return btoa(s);
  }, sample.toString("base64"));
  // Dropped on the drop zone (a real drop event carrying the file).
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "chelsea-wide.png", { type: "image/png" }));
    const zone = document.getElementById("drop");
    zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
    zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, wide);
  await page.waitForFunction(() => document.getElementById("overlay").hidden
    && document.querySelectorAll("#predictions button").length === 5, null, { timeout: 60_000 });
  assert.equal(await page.$eval("#original", (i) => `${i.naturalWidth}x${i.naturalHeight}`), "320x200");
  assert.equal(await page.isDisabled("#download-json"), true, "Download JSON offers the previous photo's result");
  await page.click("#explain");
  await waitExplained();
  const overlay = await page.$eval("#overlay", (c) => ({ w: c.width, h: c.height }));
  assert.deepEqual(overlay, { w: 320, h: 200 });
});

test("errors of the explanation stream are shown in words (server answers mocked)", async () => {
  // Both failure shapes of the contract: an HTTP error before the stream, and an `error`
  // event inside it (here with CRLF line ends and a keep-alive comment).
  const answers = [
    { status: 422, contentType: "application/json",
      body: JSON.stringify({ error: "`target`: class 5000 is past the model's 1000 labels", error_type: "invalid_target" }) },
    { status: 200, contentType: "text/event-stream",
      body: "event: progress\r\ndata: {\"done\":0,\"total\":0,\"stage\":\"queued\"}\r\n\r\n: keep-alive\r\n\r\n"
        + `event: progress\r\ndata: {"done":12,"total":${channels},"stage":"masked"}\r\n\r\n`
        + "event: error\r\ndata: {\"error\":\"the model failed at run time: worker 1 died\",\"error_type\":\"model_failure\"}\r\n\r\n" },
    { status: 200, contentType: "text/event-stream",
      body: `event: progress\ndata: {"done":3,"total":${channels},"stage":"masked"}\n\n` },
  ];
  const expected = [
    /failed: `target`: class 5000 is past the model's 1000 labels \(HTTP 422, invalid_target\)/,
    /failed: the model failed at run time: worker 1 died \(model_failure\)\.$/,
    /failed: the connection closed before a result arrived/,
  ];
  // Last, SS-CAM with 3 samples (more passes than channels) running out of time: only its
  // filled-in parameter is sent, and the message, from the planned passes, suggests lowering its
  // whole-number settings.
  answers.push({ status: 200, contentType: "text/event-stream",
    body: `event: progress\ndata: {"done":40,"total":${3 * channels},"stage":"masked"}\n\n`
      + 'event: error\ndata: {"error":"the deadline passed before the explanation finished","error_type":"deadline_exceeded"}\n\n' });
  const wholes = registry.find((m) => m.name === "sscam").parameters.filter((p) => p.kind === "integer").map((p) => p.name);
  const escape = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  expected.push(new RegExp("failed: the deadline passed before the explanation finished \\(deadline_exceeded\\)\\. "
    + escape(`This method planned ${3 * channels} masked passes for ${channels} channels, more than one per channel: `
      + `try a lower ${wholes.join(" or ")}, or another method.`) + "$"));
  let served = 0;
  const urls = [];
  await page.route("**/explain/stream?*", (route) => { urls.push(new URL(route.request().url())); route.fulfill(answers[served++]); });
  try {
    for (const [i, want] of expected.entries()) {
      if (i === expected.length - 1) {
        await page.selectOption("#method", "sscam");
        assert.equal(await page.isVisible("#samples"), true);
        await page.fill("#samples", "3");
      }
      await page.click("#explain");
      await page.waitForFunction(() => document.getElementById("error").textContent !== "", null, { timeout: 10_000 });
      assert.match(await page.getByRole("alert").textContent(), want);
      assert.equal(await page.$eval("#progress", (b) => b.hidden), true);
      assert.equal(await page.isDisabled("#cancel"), true);
      assert.equal(await page.isEnabled("#explain"), true);
    }
  } finally {
    await page.unroute("**/explain/stream?*");
    await page.selectOption("#method", "scorecam");
  }
  assert.equal(served, 4);
  const last = urls[3].searchParams;
  assert.equal(last.get("method"), "sscam");
  assert.equal(last.get("samples"), "3");
  // Empty fields are left to the server's defaults; other methods' parameters are never sent.
  assert.deepEqual([...last.keys()].sort(), ["format", "method", "model", "resolution", "samples", "target"]);
  // Score-CAM (real runs above, mocked ones here) plans at most one pass per channel: no hint.
  assert.equal(await page.isVisible("#repeat-hint"), false);
  // SS-CAM is now known to plan more passes than channels: its hint says so.
  await page.selectOption("#method", "sscam");
  assert.match(await page.textContent("#repeat-hint"),
    new RegExp(`planned ${3 * channels} masked passes for the model's ${channels} channels, more than one pass per channel: .*time limit`));
  assert.equal(await page.isVisible("#repeat-hint"), true);
  assert.equal(await page.inputValue("#samples"), "3", "the typed samples were forgotten");
  await page.fill("#samples", "");
  await page.selectOption("#method", "scorecam");
});

test("a file that is not an image gets an error in words", async () => {
  const text = Buffer.from("These are some notes, not a picture.\n");
  await page.setInputFiles("#file", { name: "notes.txt", mimeType: "text/plain", buffer: text });
  await page.waitForFunction(() => document.getElementById("error").textContent !== "", null, { timeout: 30_000 });
  const alert = page.getByRole("alert");
  assert.equal(await alert.isVisible(), true);
  const message = await alert.textContent();
  // The server's own message, in words, not a code.
  const api = await fetch(`${BASE}/predict`, {
    method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: text,
  });
  assert.ok(api.status >= 400 && api.status < 500);
  const body = await api.json();
  assert.ok(message.includes(body.error), `"${message}" does not include the server's "${body.error}"`);
  assert.match(message, /notes\.txt/);
  assert.doesNotMatch(message, /undefined|\[object/);
  assert.equal(await page.locator("#predictions button").count(), 0);
  assert.equal(await page.isDisabled("#explain"), true);
});

test("without GET /methods the page offers plain Score-CAM and says so; with another registry it follows it", async () => {
  const ctx = await newContext({ width: 1280, height: 900 });
  const p = await ctx.newPage();
  watch(p);
  const methodRequests = [];
  let answer = { status: 500, contentType: "application/json", body: JSON.stringify({ error: "registry offline", error_type: "internal" }) };
  await p.route("**/methods", (route) => {
    methodRequests.push(route.request().headers()["authorization"] || "");
    route.fulfill(answer);
  });
  await p.goto(`${BASE}/`);
  await p.waitForFunction(() => document.getElementById("method").dataset.source === "fallback");
  assert.deepEqual(await p.$$eval("#method option", (os) => os.map((o) => [o.value, o.textContent])), [["scorecam", "Score-CAM"]]);
  assert.match(await p.textContent("#status"),
    /^Could not load the explanation methods: registry offline \(HTTP 500, internal\)\. Offering Score-CAM with the server's defaults only\.$/);
  assert.deepEqual(await shownParams(p), []);

  // A registry with kinds the server may not use today; the API key goes with the request.
  answer = { status: 200, contentType: "application/json", body: JSON.stringify([
    { name: "scorecam", summary: "Score-CAM", parameters: [] },
    { name: "fakecam", summary: "Fake-CAM (test)", parameters: [
      { name: "alpha", kind: "number", default: "0.5", help: "Blend weight", exclusive_minimum: 0, maximum: 1 },
      { name: "rounds", kind: "integer", default: "4", help: "Rounds per channel", minimum: 1, maximum: 8 },
      { name: "seed", kind: "seed", default: "0", help: "Noise seed" },
      { name: "flavour", kind: "choice", default: "b", help: "Flavour", choices: ["a", "b"] },
    ] },
  ]) };
  await p.fill("#apikey", "k-123");
  await p.dispatchEvent("#apikey", "change");
  await p.waitForFunction(() => document.getElementById("method").dataset.source === "registry");
  assert.deepEqual(methodRequests, ["", "Bearer k-123"]);
  assert.equal(await p.textContent("#status"), "", "the fallback notice outlived the registry");
  assert.deepEqual(await p.$$eval("#method option", (os) => os.map((o) => o.textContent)), ["Score-CAM", "Fake-CAM (test)"]);
  await p.selectOption("#method", "fakecam");
  const shown = await shownParams(p);
  assert.deepEqual(shown.map((f) => [f.id, f.tag, f.type, f.min, f.max, f.step, f.placeholder ?? f.value, f.label]), [
    ["alpha", "input", "number", "0", "1", "any", "default: 0.5", "Blend weight"],
    ["rounds", "input", "number", "1", "8", "1", "default: 4", "Rounds per channel"],
    ["seed", "input", "number", "0", null, "1", "default: 0", "Noise seed"],
    ["flavour", "select", "select-one", null, null, null, "b", "Flavour"],
  ]);
  await p.fill("#apikey", "");
  await p.dispatchEvent("#apikey", "change");

  // Filled fields are sent, empty ones not; a value the bounds refuse is caught before sending.
  await p.setInputFiles("#file", SAMPLE);
  await p.waitForSelector("#predictions button", { timeout: 60_000 });
  await p.waitForFunction(() => document.getElementById("method").dataset.source === "registry"
    && document.getElementById("method").value === "fakecam");
  const urls = [];
  await p.route("**/explain/stream?*", (route) => {
    urls.push(new URL(route.request().url()));
    route.fulfill({ status: 200, contentType: "text/event-stream",
      body: 'event: error\ndata: {"error":"no such method here","error_type":"invalid_parameter"}\n\n' });
  });
  await p.fill("#alpha", "0");
  await p.click("#explain");
  assert.match(await p.textContent("#error"), /“alpha” must be more than 0/);
  assert.equal(urls.length, 0, "an out-of-bounds value was sent");
  await p.fill("#alpha", "0.25");
  await p.selectOption("#flavour", "a");
  await p.click("#explain");
  await p.waitForFunction(() => /no such method here/.test(document.getElementById("error").textContent));
  assert.equal(urls.length, 1);
  const q = urls[0].searchParams;
  assert.deepEqual([...q.keys()].sort(), ["alpha", "flavour", "format", "method", "model", "resolution", "target"]);
  assert.deepEqual([q.get("method"), q.get("alpha"), q.get("flavour")], ["fakecam", "0.25", "a"]);
  await ctx.close();
});

test("at 360 px wide the page is one column with no horizontal scroll", async () => {
  const narrow = await newContext({ width: 360, height: 780 });
  const p = await narrow.newPage();
  watch(p);
  await p.goto(`${BASE}/`);
  await p.setInputFiles("#file", SAMPLE);
  await p.waitForSelector("#predictions button", { timeout: 60_000 });
  const layout = await p.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
    settings: document.getElementById("h-settings").closest("section").getBoundingClientRect().left,
    predictions: document.getElementById("h-predictions").closest("section").getBoundingClientRect().left,
    settingsBottom: document.getElementById("h-settings").closest("section").getBoundingClientRect().bottom,
    predictionsTop: document.getElementById("h-predictions").closest("section").getBoundingClientRect().top,
    stageRight: document.getElementById("stage").getBoundingClientRect().right,
  }));
  assert.equal(layout.inner, 360);
  assert.ok(layout.scroll <= 360, `horizontal scroll: scrollWidth ${layout.scroll}`);
  assert.equal(layout.settings, layout.predictions, "sections are not in one column");
  assert.ok(layout.predictionsTop >= layout.settingsBottom, "sections overlap or sit side by side");
  assert.ok(layout.stageRight <= 360);
  await p.screenshot({ path: path.join(ARTIFACTS, "page-360.png"), fullPage: true });
  await narrow.close();
});

test("no console errors and no CSP violations", async () => {
  assert.deepEqual(consoleErrors, []);
  assert.deepEqual(cspViolations, []);
  console.log(`# screenshots: ${path.join(ARTIFACTS, "page.png")} ${path.join(ARTIFACTS, "page-360.png")}`);
});
