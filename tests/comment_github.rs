//! `benchstack comment --github` against a loopback GitHub REST API (support/github_emulator.rs):
//! one comment created, then the same comment updated; a check run with the document's
//! conclusion; a fork's pull request refused; GitHub's errors and hostile answers reported
//! clearly.

#[path = "support/github_emulator.rs"]
mod github_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;
use github_emulator::GitHub;

const REPO: &str = "owner/repo";
const TOKEN: &str = "ghs_test_token";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `pull_request` event payload as GitHub writes it to GITHUB_EVENT_PATH (the fields
/// benchstack reads, docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request).
fn event(dir: &Path, number: u64, head_repo: &str) -> PathBuf {
    let path = dir.join("event.json");
    let v = serde_json::json!({
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "feature", "sha": "0123456789abcdef0123456789abcdef01234567", "repo": {"full_name": head_repo}},
            "base": {"ref": "main", "sha": "fedcba9876543210fedcba9876543210fedcba98", "repo": {"full_name": REPO}}
        }
    });
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

/// An `issue_comment` event payload ("/benchstack compare" written on issue `number`), as
/// GitHub writes it (docs.github.com/en/webhooks/webhook-events-and-payloads#issue_comment):
/// `issue.pull_request` is present only when the issue is a pull request, and nothing in it
/// names the head commit.
fn comment_event(dir: &Path, number: u64, on_pull_request: bool) -> PathBuf {
    let path = dir.join("comment-event.json");
    let mut issue = serde_json::json!({
        "url": format!("https://api.github.com/repos/{REPO}/issues/{number}"),
        "number": number,
        "title": "A change under review",
        "state": "open",
        "user": {"login": "author", "type": "User"},
    });
    if on_pull_request {
        issue["pull_request"] = serde_json::json!({
            "url": format!("https://api.github.com/repos/{REPO}/pulls/{number}"),
            "html_url": format!("https://github.com/{REPO}/pull/{number}"),
            "diff_url": format!("https://github.com/{REPO}/pull/{number}.diff"),
            "patch_url": format!("https://github.com/{REPO}/pull/{number}.patch"),
            "merged_at": null
        });
    }
    let v = serde_json::json!({
        "action": "created",
        "issue": issue,
        "comment": {"id": 1, "body": "/benchstack compare", "user": {"login": "reviewer", "type": "User"}},
        "repository": {"full_name": REPO},
        "sender": {"login": "reviewer", "type": "User"}
    });
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

fn benchstack(dir: &Path, gh: &GitHub, event: &Path, token: &str) -> Command {
    let mut c = Command::cargo_bin("benchstack").unwrap();
    c.current_dir(dir)
        .env("GITHUB_API_URL", gh.url())
        .env("GITHUB_REPOSITORY", REPO)
        .env("GITHUB_EVENT_PATH", event)
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_TOKEN", token)
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null());
    c
}

/// Exit status, stdout, and stderr without whitespace and miette's gutter (it wraps lines
/// anywhere, even after a `/`): compare with [`squash`]ed text.
fn run(mut c: Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        squash(&String::from_utf8_lossy(&out.stderr)),
    )
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

/// `plan --format markdown` of the shipped local stack with `max_batch_size` set, on an
/// empty state (everything to create).
fn plan_markdown(dir: &Path, gh: &GitHub, event: &Path, max_batch: u32) -> PathBuf {
    let mut c = benchstack(dir, gh, event, TOKEN);
    c.arg("--state")
        .arg(dir.join("state"))
        .args(["plan", "--format", "markdown", "--var"])
        .arg(format!("max_batch_size={max_batch}"))
        .arg(repo_root().join("stacks/local.hcl"));
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    let path = dir.join(format!("plan-{max_batch}.md"));
    std::fs::write(&path, &out).unwrap();
    path
}

#[test]
fn the_first_run_creates_one_comment_and_the_next_updates_it_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let ev = event(dir.path(), 7, REPO);
    // 150 comments by others first: ours lands on the second page of 100.
    for i in 0..150 {
        gh.add_comment(7, "reviewer", &format!("comment {i}"));
    }
    gh.add_comment(8, "reviewer", "another pull request");

    let first = plan_markdown(dir.path(), &gh, &ev, 16);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github"]).arg(&first);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Commented on pull request #7"), "{out}");
    let ours: Vec<_> = gh
        .comments(7)
        .into_iter()
        .filter(|c| c.body.contains("<!-- benchstack "))
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].body.contains("max_batch_size"), "{}", ours[0].body);

    // The next push: another plan, the same comment edited, nothing added.
    let second = plan_markdown(dir.path(), &gh, &ev, 64);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github", "-"])
        .stdin(std::fs::File::open(&second).unwrap());
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Updated the comment"), "{out}");
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 151);
    let ours: Vec<_> = comments
        .iter()
        .filter(|c| c.body.contains("<!-- benchstack "))
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].body.contains("64"), "{}", ours[0].body);
    assert_eq!(ours[0].body, std::fs::read_to_string(&second).unwrap());
    // The listing followed the Link header to page 2 on both runs, then one PATCH.
    let reqs = gh.requests();
    assert!(
        reqs.iter().any(|(m, p)| m == "GET" && p.contains("page=2")),
        "{reqs:?}"
    );
    assert_eq!(reqs.iter().filter(|(m, _)| m == "POST").count(), 1);
    assert_eq!(reqs.iter().filter(|(m, _)| m == "PATCH").count(), 1);
    assert_eq!(gh.comments(8).len(), 1);
}

#[test]
fn check_posts_a_check_run_on_the_head_commit_with_the_document_s_conclusion() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let ev = event(dir.path(), 3, REPO);
    let plan = plan_markdown(dir.path(), &gh, &ev, 16);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github", "--check"]).arg(&plan);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    let runs = gh.check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].head_sha, "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(runs[0].status, "completed");
    // A plan that only creates: success.
    assert_eq!(runs[0].conclusion.as_deref(), Some("success"));
    assert!(
        runs[0].name.starts_with("benchstack plan "),
        "{}",
        runs[0].name
    );
    assert!(runs[0].title.starts_with("Plan:"), "{}", runs[0].title);

    // A worse verdict fails the check (what branch protection blocks on).
    let worse = dir.path().join("worse.md");
    std::fs::write(
        &worse,
        "**Compare:** p99 11.4 → 14.0 ms (+23%, worse)\n\n<!-- benchstack stack=stacks/local.hcl kind=compare plan=ab conclusion=failure -->\n",
    )
    .unwrap();
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github", "--check", "--check-name", "gate"])
        .arg(&worse);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    let runs = gh.check_runs();
    assert_eq!(runs[1].name, "gate");
    assert_eq!(runs[1].conclusion.as_deref(), Some("failure"));
    // Another kind is another comment: the plan's stays.
    assert_eq!(gh.comments(3).len(), 2);
}

#[test]
fn a_pull_request_from_a_fork_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let ev = event(dir.path(), 9, "stranger/repo");
    let doc = dir.path().join("d.md");
    std::fs::write(
        &doc,
        "**Plan:** no changes\n\n<!-- benchstack stack=s kind=plan plan=x conclusion=success -->\n",
    )
    .unwrap();
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github"]).arg(&doc);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(err.contains(&squash("fork stranger/repo")), "{err}");
    assert!(err.contains(&squash("--allow-fork")), "{err}");
    assert!(gh.requests().is_empty());

    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github", "--allow-fork"]).arg(&doc);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(gh.comments(9).len(), 1);
}

fn plan_doc(dir: &Path) -> PathBuf {
    let doc = dir.join("d.md");
    std::fs::write(
        &doc,
        "**Plan:** no changes\n\n<!-- benchstack stack=s kind=plan plan=x conclusion=success -->\n",
    )
    .unwrap();
    doc
}

const HEAD: &str = "89abcdef0123456789abcdef0123456789abcdef";

#[test]
fn a_comment_on_a_pull_request_posts_to_it_and_checks_its_head_read_from_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    gh.add_pull(12, HEAD, Some(REPO));
    let ev = comment_event(dir.path(), 12, true);
    let doc = plan_doc(dir.path());
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.env("GITHUB_EVENT_NAME", "issue_comment")
        .args(["comment", "--github", "--check"])
        .arg(&doc);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Commented on pull request #12"), "{out}");
    assert_eq!(gh.comments(12).len(), 1);
    let runs = gh.check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].head_sha, HEAD);
    let reqs = gh.requests();
    assert_eq!(
        reqs[0],
        ("GET".to_string(), format!("/repos/{REPO}/pulls/12"))
    );
}

#[test]
fn a_comment_on_a_plain_issue_or_an_unknown_pull_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let doc = plan_doc(dir.path());
    let ev = comment_event(dir.path(), 5, false);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.env("GITHUB_EVENT_NAME", "issue_comment")
        .args(["comment", "--github"])
        .arg(&doc);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(
        err.contains(&squash(
            "issue #5 is not a pull request: this issue_comment event"
        )),
        "{err}"
    );
    assert!(gh.requests().is_empty());

    // The event says pull request, GitHub does not know it: 404, nothing posted.
    let ev = comment_event(dir.path(), 99, true);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.env("GITHUB_EVENT_NAME", "issue_comment")
        .args(["comment", "--github"])
        .arg(&doc);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(
        err.contains(&squash("reading pull request #99: GitHub answered 404")),
        "{err}"
    );
    assert!(gh.requests().iter().all(|(m, _)| m == "GET"));
}

#[test]
fn a_comment_on_a_pull_request_from_a_fork_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    gh.add_pull(13, HEAD, Some("stranger/repo"));
    // A deleted fork: head.repo is null, still a fork.
    gh.add_pull(14, HEAD, None);
    let doc = plan_doc(dir.path());
    for (n, head) in [(13, "fork stranger/repo"), (14, "a deleted repository")] {
        let ev = comment_event(dir.path(), n, true);
        let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
        c.env("GITHUB_EVENT_NAME", "issue_comment")
            .args(["comment", "--github", "--check"])
            .arg(&doc);
        let (code, _, err) = run(c);
        assert_eq!(code, 1);
        assert!(err.contains(&squash(head)), "{err}");
        assert!(err.contains(&squash("--allow-fork")), "{err}");
    }
    assert!(gh.requests().iter().all(|(m, _)| m == "GET"));
    assert!(gh.check_runs().is_empty());

    let ev = comment_event(dir.path(), 13, true);
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.env("GITHUB_EVENT_NAME", "issue_comment")
        .args(["comment", "--github", "--check", "--allow-fork"])
        .arg(&doc);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(gh.comments(13).len(), 1);
    assert_eq!(gh.check_runs()[0].head_sha, HEAD);
}

#[test]
fn github_s_refusals_are_explained_and_nothing_is_posted() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let ev = event(dir.path(), 5, REPO);
    let doc = dir.path().join("d.md");
    std::fs::write(
        &doc,
        "**Plan:** no changes\n\n<!-- benchstack stack=s kind=plan plan=x conclusion=success -->\n",
    )
    .unwrap();
    let attempt = |token: &str| {
        let mut c = benchstack(dir.path(), &gh, &ev, token);
        c.args(["comment", "--github", "--check"]).arg(&doc);
        run(c)
    };
    let (code, _, err) = attempt("wrong");
    assert_eq!(code, 1);
    assert!(
        err.contains(&squash("401")) && err.contains(&squash("Bad credentials")),
        "{err}"
    );
    assert!(err.contains(&squash("GITHUB_TOKEN")), "{err}");

    gh.state.lock().unwrap().rate_limited = true;
    let (code, _, err) = attempt(TOKEN);
    assert_eq!(code, 1);
    assert!(err.contains(&squash("Rate limited until 2026-")), "{err}");
    gh.state.lock().unwrap().rate_limited = false;

    // The comment is allowed, check runs are not (no `checks: write`).
    gh.state.lock().unwrap().denied = vec!["checks"];
    let (code, _, err) = attempt(TOKEN);
    assert_eq!(code, 1);
    assert!(
        err.contains(&squash("403")) && err.contains(&squash("checks: write")),
        "{err}"
    );
    assert!(gh.check_runs().is_empty());

    // Not in a pull request workflow: said so.
    let push = dir.path().join("push.json");
    std::fs::write(&push, r#"{"ref": "refs/heads/main"}"#).unwrap();
    let mut c = benchstack(dir.path(), &gh, &push, TOKEN);
    c.args(["comment", "--github"]).arg(&doc);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(err.contains(&squash("has no pull request")), "{err}");
    // A file without the marker is refused before anything is sent.
    let plain = dir.path().join("plain.md");
    std::fs::write(&plain, "hello").unwrap();
    let before = gh.requests().len();
    let mut c = benchstack(dir.path(), &gh, &ev, TOKEN);
    c.args(["comment", "--github"]).arg(&plain);
    let (code, _, err) = run(c);
    assert_eq!(code, 1);
    assert!(err.contains(&squash("no benchstack marker")), "{err}");
    assert_eq!(gh.requests().len(), before);
}

fn client(gh: &GitHub, dir: &Path) -> benchstack::github::Client {
    let ev = event(dir, 11, REPO);
    let url = gh.url();
    let var = move |n: &str| match n {
        "GITHUB_API_URL" => Some(url.clone()),
        "GITHUB_REPOSITORY" => Some(REPO.to_string()),
        "GITHUB_TOKEN" => Some(TOKEN.to_string()),
        "GITHUB_EVENT_PATH" => Some(ev.display().to_string()),
        _ => None,
    };
    benchstack::github::Client::from_vars(&var, false).unwrap()
}

#[test]
fn a_body_over_github_s_limit_is_a_clear_422_and_hostile_answers_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let c = client(&gh, dir.path());
    let long = "x".repeat(65_537);
    let e = c
        .upsert_comment("<!-- benchstack stack=s kind=plan", &long)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("422") && msg.contains("maximum is 65536 characters"),
        "{msg}"
    );
    assert!(gh.comments(11).is_empty());

    for raw in [
        b"not json at all".to_vec(),
        b"{\"an\": \"object, not a list\"}".to_vec(),
        vec![b'['; 100_000],
    ] {
        gh.state.lock().unwrap().hostile_get = Some(raw);
        let e = c
            .upsert_comment("<!-- benchstack stack=s kind=plan", "hi")
            .unwrap_err();
        assert!(e.to_string().contains("could not be read"), "{e}");
    }
    // Larger than any listing GitHub sends.
    gh.state.lock().unwrap().hostile_get = Some(vec![b' '; 17 * 1024 * 1024]);
    let e = c
        .upsert_comment("<!-- benchstack stack=s kind=plan", "hi")
        .unwrap_err();
    assert!(e.to_string().contains("over"), "{e}");
    assert!(gh.comments(11).is_empty());
}

#[test]
fn a_read_answered_502_is_retried_a_secondary_rate_limit_is_waited_out_and_a_write_never_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let gh = GitHub::start(REPO, TOKEN);
    let c = client(&gh, dir.path());
    // The listing fails twice, then answers.
    gh.state.lock().unwrap().fail_next = 2;
    let key = "<!-- benchstack stack=s kind=plan ";
    let body = "x\n<!-- benchstack stack=s kind=plan plan=a conclusion=success -->\n";
    c.upsert_comment(key, body).unwrap();
    assert_eq!(gh.comments(11).len(), 1);
    // The write is refused once with retry-after: posted once, after the wait.
    gh.state.lock().unwrap().secondary_limit_next = 1;
    c.upsert_comment(key, body).unwrap();
    assert_eq!(gh.comments(11).len(), 1);
    let patches = gh.requests().iter().filter(|(m, _)| m == "PATCH").count();
    assert_eq!(patches, 2, "one refused, one done");
    // A 502 on the write itself is not repeated: it may have been done.
    gh.state.lock().unwrap().fail_writes_next = 1;
    let before = gh.requests().len();
    let e = c.upsert_comment(key, body).unwrap_err().to_string();
    assert!(e.contains("502"), "{e}");
    let methods: Vec<String> = gh.requests()[before..]
        .iter()
        .map(|(m, _)| m.clone())
        .collect();
    assert_eq!(methods, ["GET", "PATCH"]);
    // A listing that keeps failing gives up after three retries.
    gh.state.lock().unwrap().fail_next = 10;
    let before = gh.requests().len();
    let e = c.upsert_comment(key, body).unwrap_err().to_string();
    assert!(e.contains("502") && e.contains("Server Error"), "{e}");
    let after: Vec<_> = gh.requests()[before..].to_vec();
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(after.iter().all(|(m, _)| m == "GET"));
}
