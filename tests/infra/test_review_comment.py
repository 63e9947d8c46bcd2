"""The pull request's one review comment (infra/review/comment.py): what `build` writes from the
reports and previews, and how `post` finds the comment to update instead of adding one per push,
against a fake of GitHub's comments API."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from infra.review import comment
from infra.review.comment import BOT, LIMIT, MARKER, build, post, scrub, upsert

CHANGED = """\
make diff STACK=prod: 1a2b3c4 -> working tree
! prod: the declared peak 25 texts/s is out of reach within the SLO: 2 pods x 8 texts/s = 16 \
texts/s at most
Plan: 0 to add, 1 to change, 0 to destroy.

uninlu, uninlu, HorizontalPodAutoscaler (autoscaling) has changed:
  ~ spec.maxReplicas: 5 -> 2
-   maxReplicas: 5
+   maxReplicas: 2
"""


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    reports, previews = tmp_path / "review", tmp_path / "previews"
    write(reports, "dev.txt", "make diff STACK=dev: 1a2b3c4 -> working tree\nno changes\n")
    write(reports, "dev.rc", "0\n")
    write(reports, "prod.txt", CHANGED)
    write(reports, "prod.rc", "2\n")
    write(previews, "dev.txt", "\x1b[1mPreviewing update (dev)\x1b[0m\n~ 1 to update\n")
    return reports, previews


def test_the_body_starts_with_the_marker_and_has_each_stack(dirs):
    body = build(["dev", "prod"], *dirs, run_url="https://ci/run/1", sha="0123456789")
    assert body.startswith(MARKER + "\n")
    assert "#### dev: no changes" in body
    assert "#### prod: changes: 0 to add, 1 to change, 0 to destroy" in body
    # The report in a diff block, so + and - lines read green and red.
    assert "<summary><code>make diff STACK=prod</code></summary>\n\n```diff\n" in body
    assert "-   maxReplicas: 5\n+   maxReplicas: 2" in body
    # A problem stands outside the fold.
    assert "> **prod: the declared peak 25 texts/s is out of reach" in body
    # The preview, without terminal colours; prod has none, and says so.
    assert "Previewing update (dev)" in body and "\x1b[" not in body
    assert "_No Pulumi preview for prod: its job did not run or did not finish._" in body
    assert "Commit 0123456. [Run](https://ci/run/1)." in body


def test_short_blocks_are_open_and_long_ones_collapsed(dirs):
    reports, previews = dirs
    write(previews, "prod.txt", "".join(f"+ resource {i}\n" for i in range(200)))
    body = build(["dev", "prod"], reports, previews)
    assert "<details open><summary><code>make diff STACK=prod</code>" in body
    assert "<details><summary><code>pulumi preview --diff --stack prod</code>" in body


def test_a_huge_report_is_cut_to_fit_githubs_limit(dirs):
    reports, previews = dirs
    write(reports, "prod.txt", CHANGED + "".join(f"+ line {i:06d}\n" for i in range(20_000)))
    write(previews, "prod.txt", "".join(f"  preview {i:06d}\n" for i in range(20_000)))
    body = build(["dev", "prod"], reports, previews, run_url="https://ci/run/1")
    assert len(body) <= LIMIT
    assert body.count("more lines cut to fit the comment") == 2
    assert "the whole text is in the run's artifacts (https://ci/run/1)" in body
    assert body.count("<details") == body.count("</details>") == 4
    assert "> **prod: the declared peak" in body  # the problems are never cut


def test_a_fence_inside_the_text_does_not_end_the_block(dirs):
    reports, previews = dirs
    write(previews, "dev.txt", "a\n```\nb\n")
    body = build(["dev"], reports, previews)
    assert "````\na\n```\nb\n````" in body


def test_an_error_is_reported_as_such(dirs):
    reports, previews = dirs
    write(reports, "prod.txt", "make diff: error: invalid stack config in Pulumi.prod.yaml:\n")
    write(reports, "prod.rc", "1\n")
    assert "#### prod: error" in build(["prod"], reports, previews)


def test_scrub_takes_out_every_secret_value_and_each_long_line_of_one():
    kubeconfig = "apiVersion: v1\nusers:\n- token: abcdefghijklmnopqrstuvwxyz0123\n"
    text = "password hunter2-registry-token ok\ncert abcdefghijklmnopqrstuvwxyz0123\nusers:\n"
    cleaned = scrub(text, ["hunter2-registry-token", kubeconfig, ""])
    assert "hunter2" not in cleaned and "abcdefghijklmnop" not in cleaned
    assert "users:" in cleaned  # short lines of a multi-line secret are not secrets


class FakeGitHub:
    """The comments of one pull request, as GitHub's REST API lists them (issue comments)."""

    def __init__(self, comments: list[dict], head: str = "feed") -> None:
        self.items = comments
        self.head = head
        self.calls: list[tuple] = []

    def comments(self, pr: int) -> list[dict]:
        return list(self.items)

    def head_sha(self, pr: int) -> str:
        return self.head

    def update(self, comment_id: int, body: str) -> None:
        self.calls.append(("update", comment_id))
        next(c for c in self.items if c["id"] == comment_id)["body"] = body

    def create(self, pr: int, body: str) -> int:
        new_id = max((c["id"] for c in self.items), default=0) + 1
        self.items.append({"id": new_id, "user": {"login": BOT}, "body": body})
        self.calls.append(("create", new_id))
        return new_id


def by(login: str, body: str, comment_id: int) -> dict:
    return {"id": comment_id, "user": {"login": login, "type": "Bot"}, "body": body}


def test_the_first_push_creates_the_comment_and_every_later_push_updates_it():
    api = FakeGitHub([by("alice", "LGTM", 1)])
    assert upsert(api, 7, MARKER + "\nfirst") == ("created", 2)
    assert upsert(api, 7, MARKER + "\nsecond") == ("updated", 2)
    assert upsert(api, 7, MARKER + "\nthird") == ("updated", 2)
    assert [c["body"] for c in api.items] == ["LGTM", MARKER + "\nthird"]
    assert api.calls == [("create", 2), ("update", 2), ("update", 2)]


def test_only_the_bots_own_marked_comment_is_updated():
    api = FakeGitHub(
        [
            by("mallory", MARKER + "\nquoting the marker", 3),
            by(BOT, "a comment of another workflow", 4),
            by(BOT, MARKER + "\nold report", 5),
            by(BOT, MARKER + "\na duplicate from a race", 9),
        ]
    )
    assert upsert(api, 7, MARKER + "\nnew") == ("updated", 5)
    assert api.items[0]["body"] == MARKER + "\nquoting the marker"
    assert api.items[2]["body"] == MARKER + "\nnew"


@pytest.mark.parametrize(
    ("pr_text", "body", "head", "message"),
    [
        ("7; rm -rf /", MARKER, "feed", "not a pull request number"),
        ("0", MARKER, "feed", "not a pull request number"),
        ("7", "no marker", "feed", "does not start with the review marker"),
        ("7", MARKER, "beef", "pull request 7 is not at beef \\(any more\\)"),
    ],
)
def test_post_checks_the_artifacts_data(pr_text, body, head, message):
    api = FakeGitHub([])
    with pytest.raises(ValueError, match=message):
        post(api, pr_text, body, head)
    assert api.calls == []


def test_a_stale_run_posts_nothing_and_does_not_fail(tmp_path, monkeypatch, capsys):
    (tmp_path / "pr").write_text("7\n")
    (tmp_path / "body.md").write_text(MARKER + "\nold report")
    api = FakeGitHub([], head="newer")
    monkeypatch.setattr(comment, "GitHub", lambda *args: api)
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    code = comment.main(["post", "--repo", "o/r", "--pr-file", str(tmp_path / "pr"),
                         "--body", str(tmp_path / "body.md"), "--head-sha", "older"])  # fmt: skip
    assert code == 0 and api.calls == []
    assert "no comment posted: pull request 7 is not at older" in capsys.readouterr().out
    (tmp_path / "pr").write_text("7; echo\n")
    code = comment.main(["post", "--repo", "o/r", "--pr-file", str(tmp_path / "pr"),
                         "--body", str(tmp_path / "body.md"), "--head-sha", "older"])  # fmt: skip
    assert code == 1


def test_post_creates_then_updates_the_one_comment():
    api = FakeGitHub([])
    assert post(api, "7\n", MARKER + "\nreport", "feed") == ("created", 1)
    assert post(api, "7\n", MARKER + "\n" + "x" * (LIMIT + 10), "feed") == ("updated", 1)
    assert len(api.items) == 1 and len(api.items[0]["body"]) <= LIMIT


def test_the_command_line_builds_the_file(dirs, tmp_path, capsys):
    out = tmp_path / "comment" / "comment.md"
    code = comment.main(
        ["build", "--stacks", "dev,prod", "--reports", str(dirs[0]), "--previews", str(dirs[1]),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and out.read_text().startswith(MARKER)


class _FakeRestApi(http.server.BaseHTTPRequestHandler):
    """GitHub's REST endpoints that `post` calls, over HTTP: 130 comments (two pages), PR 7."""

    comments: ClassVar[list[dict]] = []
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _reply(self, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers["Authorization"]))
        if self.path == "/repos/o/r/pulls/7":
            return self._reply({"head": {"sha": "feed"}})
        page = int(parse_qs(urlparse(self.path).query)["page"][0])
        return self._reply(self.comments[(page - 1) * 100 : page * 100])

    def do_PATCH(self):
        self.seen.append(("PATCH", self.path, self._body()["body"]))
        return self._reply({})

    def do_POST(self):
        self.seen.append(("POST", self.path, self._body()["body"]))
        return self._reply({"id": 999})

    def log_message(self, *args) -> None:
        pass


def test_the_rest_client_pages_through_comments_and_updates_the_marked_one():
    _FakeRestApi.comments = [by("alice", f"comment {i}", i) for i in range(1, 131)]
    _FakeRestApi.comments[120] = by(BOT, MARKER + "\nold", 121)  # on the second page
    _FakeRestApi.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeRestApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = comment.GitHub("o/r", "t0ken", f"http://127.0.0.1:{server.server_port}")
        assert post(api, "7", MARKER + "\nnew", "feed") == ("updated", 121)
        _FakeRestApi.comments[120] = by("alice", "no marker any more", 121)
        assert post(api, "7", MARKER + "\nnew", "feed") == ("created", 999)
    finally:
        server.shutdown()
        server.server_close()
    calls = [(method, path) for method, path, _ in _FakeRestApi.seen]
    assert calls[:4] == [
        ("GET", "/repos/o/r/pulls/7"),
        ("GET", "/repos/o/r/issues/7/comments?per_page=100&page=1"),
        ("GET", "/repos/o/r/issues/7/comments?per_page=100&page=2"),
        ("PATCH", "/repos/o/r/issues/comments/121"),
    ]
    assert calls[-1] == ("POST", "/repos/o/r/issues/7/comments")
    assert _FakeRestApi.seen[0][2] == "Bearer t0ken"
