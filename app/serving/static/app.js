// The uninlu web page: pick an example or write a text and a schema, call POST /predict, and
// show the spans highlighted in the text, the chains (nested results) and the raw JSON.
// No framework, no CDN: it must work offline inside a pod. All user data goes into the page
// through textContent, never innerHTML.
"use strict";

// One example per task type of the model card, with our own sentences.
const EXAMPLES = [
  { task: "named_entity_recognition", label: "命名实体识别 (NER)",
    text: "2019年，张海峰从复旦大学毕业后加入了位于深圳的一家芯片公司。",
    schema: { "人物": null, "地理位置": null, "组织机构": null } },
  { task: "relation_extraction", label: "关系抽取",
    text: "在杭州亚运会游泳比赛中，9月24日晚，中国选手张雨霏以56秒21的成绩夺得女子100米蝶泳冠军。",
    schema: { "人物": { "比赛项目(赛事名称)": null, "参赛地点(城市)": null,
      "获奖时间(时间)": null, "选手国籍(国籍)": null } } },
  { task: "event_extraction", label: "事件抽取",
    text: "3月5日晚，上海海港在主场以2-1击败了山东泰山。",
    schema: { "胜负(事件触发词)": { "时间": null, "败者": null, "胜者": null, "赛事名称": null } } },
  { task: "aspect_sentiment_extraction", label: "属性情感抽取",
    text: "屏幕很清晰，电池不太耐用，客服态度不错",
    schema: { "属性词": { "情感词": null } } },
  { task: "aspect_sentiment_extraction_missing_aspect", label: "属性情感抽取（属性缺省，文本前加 #）",
    text: "#物流很快，包装也很用心，总体挺划算",
    schema: { "属性词": { "情感词": null } } },
  { task: "aspect_sentiment_polarity", label: "属性情感极性",
    text: "屏幕很清晰，电池不太耐用，客服态度不错",
    schema: { "属性词": { "正向情感(情感词)": null, "负向情感(情感词)": null,
      "中性情感(情感词)": null } } },
  { task: "coreference", label: "指代消解",
    text: "是的,不是|小王把借来的书还给了林老师（候选词），她(代词)笑着说下次再来。",
    schema: { "在下面的描述中，代词“她”指代的是“林老师”吗？": null } },
  { task: "sentiment_classification", label: "情感分类",
    text: "正向,负向|这家小店的面分量很足，汤头也地道，下次还会再来。",
    schema: { "情感分类": null } },
  { task: "text_classification", label: "文本分类",
    text: "教育,体育,财经,科技,旅游,军事|国产新型号手机芯片今日发布，功耗比上一代降低三成",
    schema: { "分类": null } },
  { task: "text_matching", label: "文本匹配",
    text: "相似,不相似|怎么修改银行卡密码&银行卡的密码在哪里改",
    schema: { "文本匹配": null } },
  { task: "text_matching_yes_no", label: "文本匹配（是/否）",
    text: "是的,不是|句子1：明天上午会下雨吗；句子2：明天早上天气怎么样",
    schema: { "下面两句话的意思是否相同": null } },
  { task: "natural_language_inference", label: "自然语言推理",
    text: "蕴含,矛盾,中立|段落1：图书馆周末照常开放，晚上九点闭馆；段落2：周六晚上八点还能去图书馆",
    schema: { "段落2和段落1的关系是：": null } },
  { task: "multiple_choice_reading_comprehension", label: "选择式阅读理解",
    text: "路上太堵,起床太晚,忘带钥匙,闹钟坏了|A：你今天怎么又迟到了？B：别提了，昨晚闹钟没电，我一觉睡到八点半。",
    schema: { "B为什么迟到?": null } },
  { task: "extractive_reading_comprehension", label: "抽取式阅读理解",
    text: "青石镇位于浙江省西南部的山区，距县城约四十公里，镇上保存着一条明代修建的石板老街，全长六百余米。每年秋天，镇里都会举办为期一周的竹编文化节。",
    schema: { "青石镇位于哪里？": null } },
];

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

function init() {
  const picker = $("example");
  EXAMPLES.forEach((ex, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.dataset.task = ex.task;
    option.textContent = ex.label;
    picker.append(option);
  });
  picker.addEventListener("change", () => loadExample(Number(picker.value)));
  $("schema").addEventListener("input", checkSchema);
  $("form").addEventListener("submit", submit);
  loadExample(0);
}

init();
