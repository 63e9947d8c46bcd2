"""The pull request's review comment: for each stack, the `make diff` report and the Pulumi
preview, in ONE comment that each push updates in place. Standard library only: the job that posts
it runs this file from the default branch without installing anything.

    python3 -m infra.review.comment build --stacks dev,prod --reports DIR --previews DIR --out FILE
    python3 -m infra.review.comment scrub --file FILE --env NAME [--env NAME ...]
    python3 -m infra.review.comment post --repo OWNER/NAME --pr-file FILE --body FILE --head-sha SHA

`build` (in pulumi-preview.yml, no secrets) writes the body: a hidden marker first, then per
stack the report (`diff` highlighting, problems outside the fold) and the preview, each in a
`<details>` that is open when short and collapsed when long, the whole cut to fit GitHub's
65,536-character limit. `post` (in pulumi-review-comment.yml, the only job with a write token)
finds the bot's comment that starts with the marker and updates it, or creates it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MARKER = "<!-- uninlu-review -->"
LIMIT = 65_536  # GitHub: "Body is too long (maximum is 65536 characters)"
BUDGET = 60_000  # what the blocks may take together, leaving room for the frame
OPEN_LINES = 40  # a block up to this many lines is shown open, a longer one collapsed
BOT = "github-actions[bot]"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --- build --------------------------------------------------------------------------------------


@dataclass
class Block:
    summary: str
    text: str
    language: str = ""

    def render(self) -> str:
        fence = "```"
        while fence in self.text:
            fence += "`"
        opened = " open" if self.text.count("\n") < OPEN_LINES else ""
        return (
            f"<details{opened}><summary>{self.summary}</summary>\n\n"
            f"{fence}{self.language}\n{self.text.rstrip()}\n{fence}\n</details>"
        )


def clean(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n")


def cut(text: str, size: int, where: str) -> str:
    """`text` within `size` characters, at a line boundary, saying how much was left out."""
    if len(text) <= size:
        return text
    kept = text[: max(0, size - 200)]
    kept = kept[: kept.rfind("\n") + 1] if "\n" in kept else kept
    left = text[len(kept) :].count("\n") + 1
    return kept + f"… {left} more lines cut to fit the comment: {where}\n"


def fit(blocks: list[Block], budget: int, where: str) -> None:
    """Shrink the longest blocks until all of them fit the budget together."""
    while sum(len(b.text) for b in blocks) > budget:
        longest = max(blocks, key=lambda b: len(b.text))
        others = sum(len(b.text) for b in blocks) - len(longest.text)
        size = max(budget - others, budget // (2 * len(blocks)))
        if size >= len(longest.text):
            break
        longest.text = cut(longest.text, size, where)


def _read(path: Path) -> str | None:
    return clean(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None


def _status(report: str | None, rc: str | None) -> str:
    if report is None or rc is None:
        return "no report (the job did not get this far)"
    code = rc.strip()
    if code == "0":
        return "no changes"
    if code == "2":
        plan = next((line for line in report.splitlines() if line.startswith("Plan: ")), "")
        return "changes" + (f": {plan[len('Plan: ') :].rstrip('.')}" if plan else "")
    return "error"


def build(
    stacks: Iterable[str],
    reports: Path,
    previews: Path,
    run_url: str = "",
    sha: str = "",
) -> str:
    """The comment's body, MARKER first."""
    parts: list[str | Block] = [
        MARKER,
        "### What this pull request does to each stack",
        "The chart's Kubernetes objects rendered from the base and from this pull request "
        "(`make diff STACK=<stack>`, with the capacity consequence), and `pulumi preview --diff`."
        + (f" Commit {sha[:7]}." if sha else "")
        + (f" [Run]({run_url})." if run_url else ""),
    ]
    for stack in stacks:
        report = _read(reports / f"{stack}.txt")
        rc = _read(reports / f"{stack}.rc")
        preview = _read(previews / f"{stack}.txt")
        parts.append(f"#### {stack}: {_status(report, rc)}")
        problems = [line for line in (report or "").splitlines() if line.startswith("! ")]
        parts += [f"> **{line[2:]}**" for line in problems]
        if report is not None:
            parts.append(Block(f"<code>make diff STACK={stack}</code>", report, "diff"))
        parts.append(
            Block(f"<code>pulumi preview --diff --stack {stack}</code>", preview)
            if preview is not None
            else f"_No Pulumi preview for {stack}: its job did not run or did not finish._"
        )
    blocks = [p for p in parts if isinstance(p, Block)]
    where = f"the whole text is in the run's artifacts ({run_url})" if run_url else "see the run"
    fit(blocks, BUDGET, where)
    body = "\n\n".join(p.render() if isinstance(p, Block) else p for p in parts) + "\n"
    return body if len(body) <= LIMIT else body[: LIMIT - 40] + "\n\n… cut to fit the comment\n"


# --- scrub --------------------------------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Every secret value (and each long line, or long value of a line, of a multi-line one such
    as a kubeconfig's certificates and tokens) replaced by ***."""
    needles: set[str] = set()
    for value in secrets:
        if not value:
            continue
        needles.add(value)
        for line in value.splitlines():
            # A line, and its value after `key: ` (a kubeconfig's token, certificate data).
            for part in (line.strip(), line.rsplit(": ", 1)[-1].strip(" \"'")):
                if len(part) >= 16:
                    needles.add(part)
    for needle in sorted(needles, key=len, reverse=True):
        text = text.replace(needle, "***")
    return text


# --- post --------------------------------------------------------------------------------------


class Api(Protocol):
    def comments(self, pr: int) -> list[dict[str, Any]]: ...
    def head_sha(self, pr: int) -> str: ...
    def update(self, comment_id: int, body: str) -> None: ...
    def create(self, pr: int, body: str) -> int: ...


class GitHub:
    """The three REST calls, with the workflow's token (issue comments: a PR is an issue)."""

    def __init__(self, repo: str, token: str, api_url: str = "https://api.github.com") -> None:
        self.base = f"{api_url.rstrip('/')}/repos/{repo}"
        self.token = token

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def comments(self, pr: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self._call("GET", f"/issues/{pr}/comments?per_page=100&page={page}")
            found += batch
            if len(batch) < 100:
                return found
            page += 1

    def head_sha(self, pr: int) -> str:
        return self._call("GET", f"/pulls/{pr}")["head"]["sha"]

    def update(self, comment_id: int, body: str) -> None:
        self._call("PATCH", f"/issues/comments/{comment_id}", {"body": body})

    def create(self, pr: int, body: str) -> int:
        return self._call("POST", f"/issues/{pr}/comments", {"body": body})["id"]


def upsert(api: Api, pr: int, body: str, bot: str = BOT) -> tuple[str, int]:
    """Update the bot's comment that starts with the marker (the first, if a race made two), or
    create it. Someone else's comment that quotes the marker is never touched."""
    mine = [
        c
        for c in api.comments(pr)
        if (c.get("user") or {}).get("login") == bot and (c.get("body") or "").startswith(MARKER)
    ]
    if mine:
        comment_id = min(mine, key=lambda c: c["id"])["id"]
        api.update(comment_id, body)
        return "updated", comment_id
    return "created", api.create(pr, body)


class Stale(ValueError):
    """The pull request is no longer at the run's commit: a newer run posts its own report (or
    the artifact names another pull request). Nothing is posted, and that is no failure."""


def post(api: Api, pr_text: str, body: str, head_sha: str) -> tuple[str, int]:
    """The artifact's PR number and body are data from a pull request's run: check them."""
    if not re.fullmatch(r"[1-9][0-9]{0,9}", pr_text.strip()):
        raise ValueError(f"not a pull request number: {pr_text.strip()[:40]!r}")
    pr = int(pr_text)
    if not body.startswith(MARKER):
        raise ValueError("the body does not start with the review marker")
    if api.head_sha(pr) != head_sha:
        raise Stale(f"pull request {pr} is not at {head_sha} (any more): a newer run posts")
    if len(body) > LIMIT:
        body = body[: LIMIT - 40] + "\n\n… cut to fit the comment\n"
    return upsert(api, pr, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m infra.review.comment")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="write the comment's body")
    b.add_argument("--stacks", required=True, help="comma-separated")
    b.add_argument("--reports", type=Path, required=True, help="<stack>.txt and <stack>.rc")
    b.add_argument("--previews", type=Path, required=True, help="<stack>.txt")
    b.add_argument("--run-url", default="")
    b.add_argument("--sha", default="")
    b.add_argument("--out", type=Path, required=True)
    s = commands.add_parser("scrub", help="replace secret values in a file by ***")
    s.add_argument("--file", type=Path, required=True)
    s.add_argument("--env", action="append", default=[], help="a variable holding a secret")
    p = commands.add_parser("post", help="create or update the one review comment")
    p.add_argument("--repo", required=True)
    p.add_argument("--pr-file", type=Path, required=True)
    p.add_argument("--body", type=Path, required=True)
    p.add_argument("--head-sha", required=True)
    args = parser.parse_args(argv)

    if args.command == "build":
        stacks = [s for s in args.stacks.split(",") if s]
        text = build(stacks, args.reports, args.previews, args.run_url, args.sha)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"{args.out}: {len(text)} characters")
    elif args.command == "scrub":
        if args.file.is_file():
            text = args.file.read_text(encoding="utf-8", errors="replace")
            args.file.write_text(scrub(text, (os.environ.get(n, "") for n in args.env)))
    else:
        api = GitHub(
            args.repo,
            os.environ["GITHUB_TOKEN"],
            os.environ.get("GITHUB_API_URL", "https://api.github.com"),
        )
        body = args.body.read_text(encoding="utf-8")
        try:
            action, comment_id = post(api, args.pr_file.read_text(), body, args.head_sha)
        except Stale as err:
            print(f"no comment posted: {err}")
            return 0
        except ValueError as err:
            print(f"no comment posted: {err}", file=sys.stderr)
            return 1
        print(f"{action} comment {comment_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
