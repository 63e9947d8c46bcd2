"""A deterministic generator of /predict bodies in every task form of SiameseUniNLU.

Why: int8 needs calibration inputs at export time (app/tools/onnx_int8.py), and its agreement with
fp32 must be measured on far more cases than the 14 examples (bench/agreement_set.py); both
draw from here, with different seeds. Forms: flat extraction (NER), nested schemas (relations,
events, two and three levels), classification ("label,label|text") and reading comprehension
(a question as the schema), and long texts that span several 384-token windows.
"""

from __future__ import annotations

import random

PEOPLE = [
    "谷爱凌",
    "张伟",
    "李娜",
    "王芳",
    "刘洋",
    "陈静",
    "杨帆",
    "赵磊",
    "黄晓明",
    "周杰",
    "吴敏",
]
PLACES = ["北京", "上海", "杭州", "成都", "天津", "广州", "西安", "南京", "武汉", "山东省", "日本"]
ORGS = ["北京大学", "清华大学", "天津泰达", "阿里巴巴", "华为公司", "中国银行", "新华社", "国家队"]
EVENTS = ["决赛", "联赛", "马拉松", "锦标赛", "发布会", "研讨会", "音乐节"]
DATES = ["2月8日", "7月28日", "2019年", "去年秋天", "1944年", "上周三", "12月1日"]
VERBS = ["获得了冠军", "发表了演讲", "签署了协议", "赢得了比赛", "访问了", "参加了", "出席了"]
OPINIONS = ["音质很好", "发货速度快", "价格太贵", "服务态度差", "包装精美", "续航一般", "屏幕清晰"]
TOPICS = ["体育", "财经", "科技", "教育", "旅游", "军事", "娱乐", "汽车"]

SENTENCES = [
    "{date}，{person}在{place}的{event}中{verb}。",
    "{person}毕业于{org}，后来在{place}工作了很多年。",
    "{org}宣布{person}将于{date}前往{place}出席{event}。",
    "据{org}报道，{date}在{place}举行的{event}吸引了{n}名观众。",
    "{person}表示，{org}在{place}的投资已经超过{n}亿元。",
]
SCHEMAS_FLAT = [
    {"人物": None, "地理位置": None, "组织机构": None},
    {"人物": None, "时间": None},
    {"地理位置": None, "组织机构": None, "赛事名称": None},
]
SCHEMAS_NESTED = [
    {"人物": {"毕业院校(组织机构)": None, "工作地点(地理位置)": None}},
    {"组织机构": {"所在地(地理位置)": None, "成员(人物)": None}},
    {"比赛(事件触发词)": {"时间": None, "胜者": None, "地点": None}},
    {"人物": {"参加(事件)": {"时间": None, "地点": None}}},  # three levels
]
CLASSIFICATION = [
    ("正向,负向", "情感分类", OPINIONS),
    (",".join(TOPICS), "分类", None),
    ("相似,不相似", "文本匹配", None),
]
QUESTIONS = ["{person}在哪里工作？", "{event}是什么时候举行的？", "谁{verb}？", "{org}宣布了什么？"]
FORMS = ("flat", "nested", "classification", "reading", "long")


def _sentence(rng: random.Random) -> str:
    return rng.choice(SENTENCES).format(
        date=rng.choice(DATES),
        person=rng.choice(PEOPLE),
        place=rng.choice(PLACES),
        event=rng.choice(EVENTS),
        verb=rng.choice(VERBS),
        org=rng.choice(ORGS),
        n=rng.randint(2, 900),
    )


def _text(rng: random.Random, min_chars: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < min_chars:
        parts.append(_sentence(rng))
    return "".join(parts)


def _case(rng: random.Random, form: str) -> dict:
    if form == "flat":
        return {"text": _text(rng, rng.randint(20, 120)), "schema": dict(rng.choice(SCHEMAS_FLAT))}
    if form == "nested":
        return {"text": _text(rng, rng.randint(30, 160)), "schema": rng.choice(SCHEMAS_NESTED)}
    if form == "classification":
        labels, key, phrases = rng.choice(CLASSIFICATION)
        body = "，".join(rng.sample(phrases, 3)) if phrases else _text(rng, rng.randint(15, 60))
        if key == "文本匹配":
            body = _sentence(rng) + "&" + _sentence(rng)
        return {"text": f"{labels}|{body}", "schema": {key: None}}
    if form == "reading":
        question = rng.choice(QUESTIONS).format(
            person=rng.choice(PEOPLE),
            event=rng.choice(EVENTS),
            verb=rng.choice(VERBS),
            org=rng.choice(ORGS),
        )
        return {"text": _text(rng, rng.randint(60, 300)), "schema": {question: None}}
    # long: 2-4 windows of 384 tokens (about one token per character here)
    schema = rng.choice(SCHEMAS_FLAT + SCHEMAS_NESTED[:2])
    return {"text": _text(rng, rng.randint(420, 1200)), "schema": schema}


def generate_cases(n: int, seed: int, long_share: float = 0.1) -> list[dict]:
    """`n` bodies {task, text, schema}, the same for the same (n, seed); about `long_share` of
    them long, the rest spread evenly over the other forms."""
    rng = random.Random(seed)
    n_long = round(n * long_share)
    forms = [FORMS[i % 4] for i in range(n - n_long)] + ["long"] * n_long
    return [{"task": f"{form}-{i}", **_case(rng, form)} for i, form in enumerate(forms)]
