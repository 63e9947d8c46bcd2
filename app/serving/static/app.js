// The uninlu web page: pick an example or write a text and a schema, call POST /predict, and
// show the spans highlighted in the text, the chains (nested results) and the raw JSON.
// No framework, no CDN: it must work offline inside a pod. All user data goes into the page
// through textContent, never innerHTML.
"use strict";

// The project's example requests, one per task type: GET /examples (app/model/examples.json,
// the one copy of them), fetched when the page starts.
let EXAMPLES = [];

const PALETTE = ["#ffe08a", "#b7e4c7", "#bcd7ff", "#ffc9de", "#d7c6ff", "#ffd3a8", "#c5f0f0",
  "#e6e9a1"];

const $ = (id) => document.getElementById(id);

// The same rules as the server's schema check: an object of non-empty string keys whose values
// are null or an object of the same kind. Returns an error message, or "" when valid.
function schemaProblem(value, path = "") {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    const kind = Array.isArray(value) ? "an array" : value === null ? "null" : `a ${typeof value}`;
    return `${path || "the schema"} must be an object, not ${kind}`;
  }
  const keys = Object.keys(value);
  if (!path && keys.length === 0) return "the schema is empty: add at least one type";
  for (const key of keys) {
    const where = path ? `${path}/${key}` : key;
    if (!key.trim()) return `empty type name at "${where}"`;
    const child = value[key];
    if (child === null) continue;
    if (typeof child !== "object" || Array.isArray(child)) {
      return `the value of "${where}" must be null or an object`;
    }
    const inner = schemaProblem(child, where);
    if (inner) return inner;
  }
  return "";
}

function checkSchema() {
  const box = $("schema");
  const status = $("schema-status");
  let problem = "";
  let parsed = null;
  try {
    parsed = JSON.parse(box.value);
    problem = schemaProblem(parsed);
  } catch (err) {
    problem = `not valid JSON: ${err.message}`;
  }
  box.classList.toggle("invalid", Boolean(problem));
  status.classList.toggle("bad", Boolean(problem));
  status.textContent = problem ? `Schema problem: ${problem}` : "Schema is valid.";
  return problem ? null : parsed;
}

function loadExample(index) {
  const ex = EXAMPLES[index];
  $("text").value = ex.text;
  $("schema").value = JSON.stringify(ex.schema, null, 2);
  $("example-note").textContent = `task: ${ex.task}`;
  checkSchema();
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

// Colour per type name, stable within one result.
function colourFor() {
  const map = new Map();
  return (type) => {
    if (!map.has(type)) map.set(type, PALETTE[map.size % PALETTE.length]);
    return map.get(type);
  };
}

// Split the text into segments where the set of covering spans is constant; a segment covered
// by spans becomes a <mark> whose title lists every chain covering it.
function renderHighlighted(text, output, colour) {
  const chars = Array.from(text); // code points; offsets from the server count code points
  const cover = chars.map(() => []);
  output.forEach((chain, chainIndex) => {
    const leaf = chain[chain.length - 1];
    const [start, end] = leaf.offset;
    for (let i = start; i < end && i < chars.length; i++) cover[i].push({ chainIndex, leaf, chain });
  });
  const root = $("highlighted");
  root.replaceChildren();
  let i = 0;
  while (i < chars.length) {
    const key = cover[i].map((c) => c.chainIndex).join(",");
    let j = i + 1;
    while (j < chars.length && cover[j].map((c) => c.chainIndex).join(",") === key) j++;
    const piece = chars.slice(i, j).join("");
    if (cover[i].length === 0) {
      root.append(document.createTextNode(piece));
    } else {
      const mark = document.createElement("mark");
      mark.className = "span" + (cover[i].length > 1 ? " overlap" : "");
      mark.style.background = colour(cover[i][0].leaf.type);
      mark.dataset.types = [...new Set(cover[i].map((c) => c.leaf.type))].join(" ");
      mark.title = cover[i]
        .map((c) => c.chain.map((it) => `${it.type}: ${it.span}`).join(" → "))
        .join("\n");
      mark.textContent = piece;
      root.append(mark);
    }
    i = j;
  }
}

function renderChains(output, colour) {
  const list = $("chains");
  list.replaceChildren();
  if (output.length === 0) {
    const li = document.createElement("li");
    li.textContent = "Nothing found for this schema.";
    list.append(li);
    return;
  }
  for (const chain of output) {
    const li = document.createElement("li");
    chain.forEach((item, k) => {
      if (k > 0) {
        const arrow = document.createElement("span");
        arrow.className = "arrow";
        arrow.textContent = "→";
        li.append(arrow);
      }
      const box = document.createElement("span");
      box.className = "chain-item";
      box.style.background = colour(item.type);
      const type = document.createElement("span");
      type.className = "type";
      type.textContent = item.type;
      box.append(type, document.createTextNode(`${item.span} [${item.offset[0]}, ${item.offset[1]})`));
      li.append(box);
    });
    list.append(li);
  }
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  const schema = checkSchema();
  if (schema === null) {
    showError("Fix the schema first: " + $("schema-status").textContent);
    return;
  }
  const text = $("text").value;
  const body = { text, schema, output_all_prefix: $("all-prefix").checked };
  const button = $("submit");
  button.disabled = true;
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const err = data && data.error;
      const retry = response.headers.get("retry-after");
      showError(
        `Error ${response.status}` + (err ? ` (${err.code}): ${err.message}` : "") +
        (retry ? ` — retry after ${retry} s` : ""),
      );
      return;
    }
    const colour = colourFor();
    renderHighlighted(text, data.output, colour);
    renderChains(data.output, colour);
    $("raw").textContent = JSON.stringify(data, null, 2);
    $("result").hidden = false;
  } catch (err) {
    showError(`The server could not be reached: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function init() {
  $("schema").addEventListener("input", checkSchema);
  $("form").addEventListener("submit", submit);
  const picker = $("example");
  picker.addEventListener("change", () => loadExample(Number(picker.value)));
  try {
    const response = await fetch("/examples");
    if (!response.ok) throw new Error(`GET /examples answered ${response.status}`);
    EXAMPLES = (await response.json()).examples;
  } catch (err) {
    showError(`The examples could not be loaded (${err.message}); write a text and a schema.`);
    return;
  }
  EXAMPLES.forEach((ex, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.dataset.task = ex.task;
    option.textContent = ex.label || ex.task;
    picker.append(option);
  });
  if (EXAMPLES.length > 0) loadExample(0);
}

init();
