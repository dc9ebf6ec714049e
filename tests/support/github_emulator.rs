//! A loopback emulator of the parts of GitHub's REST API `benchstack comment --github` uses.
//! Include with `#[path = "support/github_emulator.rs"] mod github_emulator;`.
//!
//! Modelled on GitHub's documentation (API version 2022-11-28), not on benchstack:
//! - Issue comments (docs.github.com/en/rest/issues/comments):
//!   `GET /repos/{owner}/{repo}/issues/{issue_number}/comments` lists oldest first, `per_page`
//!   (default 30, max 100) and `page`, 200 with a JSON array; `POST` the same path with
//!   `{"body"}` answers 201 with the comment; `PATCH /repos/{owner}/{repo}/issues/comments/
//!   {comment_id}` answers 200 with the comment, 404 for an unknown id. A comment object has
//!   `id`, `node_id`, `url`, `html_url`, `body`, `user`, `created_at`, `updated_at`.
//! - Pagination (docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api):
//!   a `Link` header with `<URL>; rel="next"`, `rel="last"` (and `prev`, `first`) when there
//!   is more than one page.
//! - Body limit: a comment body over 65,536 characters is answered 422 "Validation Failed"
//!   with `errors: [{resource: "IssueComment", code: "custom", field: "body", message: "body
//!   is too long (maximum is 65536 characters)"}]` (the documented 422 of "Create an issue
//!   comment"; the limit as GitHub's UI and Atlantis#55 report it).
//! - Check runs (docs.github.com/en/rest/checks/runs#create-a-check-run):
//!   `POST /repos/{owner}/{repo}/check-runs` with `name`, `head_sha`, `status`,
//!   `conclusion` (required when status is `completed`; one of action_required, cancelled,
//!   failure, neutral, success, skipped, stale, timed_out), `output.{title, summary}`
//!   (summary at most 65,535 characters); 201 with the check run; 422 on a bad value.
//! - Pull requests (docs.github.com/en/rest/pulls/pulls#get-a-pull-request):
//!   `GET /repos/{owner}/{repo}/pulls/{pull_number}` answers 200 with the pull request: `url`,
//!   `id`, `node_id`, `html_url`, `number`, `state`, `title`, `user`, `draft`, and `head` /
//!   `base` each with `label`, `ref`, `sha`, `user` and `repo` (a repository object with
//!   `full_name` and `fork`; `head.repo` is null when the fork was deleted); 404 "Not Found"
//!   for a number that is not a pull request of the repository (a plain issue included).
//! - Authentication (docs.github.com/en/rest/authentication): `Authorization: Bearer TOKEN`;
//!   a wrong token is 401 `{"message": "Bad credentials", "documentation_url": …}`. A token
//!   without the permission is 403 "Resource not accessible by integration". Rate limits
//!   (…/rate-limits-for-the-rest-api): 403 with `x-ratelimit-remaining: 0` and
//!   `x-ratelimit-reset` (epoch seconds).
//! - Every request needs a `User-Agent` (403 without one, per "Getting started with the REST
//!   API").
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::http_emulator::{self, Reply, Request, Server};
use serde_json::{Value, json};

pub const BODY_LIMIT: usize = 65_536;
pub const SUMMARY_LIMIT: usize = 65_535;

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct CheckRun {
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub title: String,
    pub summary: String,
}

/// A pull request of the repository (`head_repo` None: the fork was deleted).
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub head_sha: String,
    pub head_ref: String,
    pub head_repo: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub pulls: Vec<Pull>,
    pub repo: String,
    pub token: String,
    pub comments: Vec<Comment>,
    pub check_runs: Vec<CheckRun>,
    pub next_id: u64,
    /// What the token may not do: `checks` (check runs), `comments`.
    pub denied: Vec<&'static str>,
    /// Answer every request 403 with the rate-limit headers.
    pub rate_limited: bool,
    /// Answer this raw body with 200 to every GET (hostile responses).
    pub hostile_get: Option<Vec<u8>>,
    /// Answer the next N requests 502 (GitHub's "Server Error" when a backend times out).
    pub fail_next: usize,
    /// Answer the next N writes (POST, PATCH) 502.
    pub fail_writes_next: usize,
    /// Answer the next N writes with a secondary rate limit: 403 and `retry-after: 1`
    /// ("Rate limits for the REST API": "wait for the number of seconds in retry-after").
    pub secondary_limit_next: usize,
    /// (method, path with query) of every request.
    pub requests: Vec<(String, String)>,
}

pub struct GitHub {
    server: Server,
    pub state: Arc<Mutex<State>>,
}

fn reply(status: u16, body: Value) -> Reply {
    let mut r = http_emulator::reply(
        http_emulator::status(status),
        "application/json; charset=utf-8",
        body.to_string(),
    );
    r.headers_mut().insert(
        "x-github-api-version-selected",
        "2022-11-28".parse().unwrap(),
    );
    r
}

fn error(status: u16, message: &str, doc: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": format!("https://docs.github.com/rest/{doc}"), "status": status.to_string()}),
    )
}

fn validation(resource: &str, field: &str, message: &str) -> Reply {
    reply(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "custom", "field": field, "message": message}],
            "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
            "status": "422"
        }),
    )
}

impl GitHub {
    /// Serves `repo` (`owner/name`), accepting `token`.
    pub fn start(repo: &str, token: &str) -> GitHub {
        let state = Arc::new(Mutex::new(State {
            repo: repo.into(),
            token: token.into(),
            next_id: 1_000,
            ..Default::default()
        }));
        let shared = state.clone();
        let server = Server::start(move |req| handle(&shared, &req));
        GitHub { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn comments(&self, issue: u64) -> Vec<Comment> {
        let s = self.state.lock().unwrap();
        s.comments
            .iter()
            .filter(|c| c.issue == issue)
            .cloned()
            .collect()
    }

    /// A comment by someone else (another bot, a reviewer).
    pub fn add_comment(&self, issue: u64, user: &str, body: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.comments.push(Comment {
            id,
            issue,
            body: body.into(),
            user: user.into(),
        });
        id
    }

    /// A pull request whose head is `head_sha` on `head_repo` (the repository itself, a fork,
    /// or None for a deleted fork).
    pub fn add_pull(&self, number: u64, head_sha: &str, head_repo: Option<&str>) {
        self.state.lock().unwrap().pulls.push(Pull {
            number,
            head_sha: head_sha.into(),
            head_ref: "feature".into(),
            head_repo: head_repo.map(str::to_string),
        });
    }

    pub fn check_runs(&self) -> Vec<CheckRun> {
        self.state.lock().unwrap().check_runs.clone()
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn comment_json(addr: SocketAddr, repo: &str, c: &Comment) -> Value {
    json!({
        "id": c.id,
        "node_id": format!("IC_{}", c.id),
        "url": format!("http://{addr}/repos/{repo}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{repo}/pull/{}#issuecomment-{}", c.issue, c.id),
        "issue_url": format!("http://{addr}/repos/{repo}/issues/{}", c.issue),
        "body": c.body,
        "user": {"login": c.user, "type": if c.user.ends_with("[bot]") { "Bot" } else { "User" }},
        "author_association": "NONE",
        "created_at": "2026-12-07T00:00:00Z",
        "updated_at": "2026-12-07T00:00:00Z",
    })
}

fn repo_json(addr: SocketAddr, full_name: &str, base: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or((full_name, full_name));
    json!({
        "id": 1,
        "node_id": format!("R_{full_name}"),
        "name": name,
        "full_name": full_name,
        "owner": {"login": owner, "type": "User"},
        "private": false,
        "fork": full_name != base,
        "html_url": format!("https://github.com/{full_name}"),
        "url": format!("http://{addr}/repos/{full_name}"),
        "default_branch": "main",
    })
}

fn pull_json(addr: SocketAddr, repo: &str, p: &Pull) -> Value {
    let head_owner = p
        .head_repo
        .as_deref()
        .and_then(|r| r.split_once('/'))
        .map(|(o, _)| o)
        .unwrap_or("ghost");
    let base_owner = repo.split_once('/').map(|(o, _)| o).unwrap_or(repo);
    json!({
        "url": format!("http://{addr}/repos/{repo}/pulls/{}", p.number),
        "id": 100_000 + p.number,
        "node_id": format!("PR_{}", p.number),
        "html_url": format!("https://github.com/{repo}/pull/{}", p.number),
        "issue_url": format!("http://{addr}/repos/{repo}/issues/{}", p.number),
        "number": p.number,
        "state": "open",
        "locked": false,
        "title": "A change under review",
        "user": {"login": head_owner, "type": "User"},
        "body": null,
        "draft": false,
        "merged": false,
        "mergeable": null,
        "created_at": "2026-12-07T00:00:00Z",
        "updated_at": "2026-12-07T00:00:00Z",
        "head": {
            "label": format!("{head_owner}:{}", p.head_ref),
            "ref": p.head_ref,
            "sha": p.head_sha,
            "user": {"login": head_owner, "type": "User"},
            "repo": p.head_repo.as_deref().map(|r| repo_json(addr, r, repo)),
        },
        "base": {
            "label": format!("{base_owner}:main"),
            "ref": "main",
            "sha": "fedcba9876543210fedcba9876543210fedcba98",
            "user": {"login": base_owner, "type": "User"},
            "repo": repo_json(addr, repo, repo),
        },
    })
}

fn query(q: &str, name: &str) -> Option<usize> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
}

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Reply {
    let addr = req.local_addr;
    let body = &req.body[..];
    let mut s = state.lock().unwrap();
    let path = req.uri.path().to_string();
    let q = req.uri.query().unwrap_or("").to_string();
    s.requests.push((
        req.method.to_string(),
        if q.is_empty() {
            path.clone()
        } else {
            format!("{path}?{q}")
        },
    ));
    if req.headers.get("user-agent").is_none() {
        return error(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
            "overview/resources-in-the-rest-api#user-agent-required",
        );
    }
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", s.token) && auth != format!("token {}", s.token) {
        return error(401, "Bad credentials", "");
    }
    if s.rate_limited {
        let mut r = error(
            403,
            "API rate limit exceeded for installation ID 1.",
            "overview/rate-limits-for-the-rest-api",
        );
        let h = r.headers_mut();
        h.insert("x-ratelimit-limit", "1000".parse().unwrap());
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "1796601600".parse().unwrap());
        return r;
    }
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return reply(502, json!({"message": "Server Error"}));
    }
    if req.method != "GET" && s.fail_writes_next > 0 {
        s.fail_writes_next -= 1;
        return reply(502, json!({"message": "Server Error"}));
    }
    if req.method != "GET" && s.secondary_limit_next > 0 {
        s.secondary_limit_next -= 1;
        let mut r = error(
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
        );
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    if req.method == "GET"
        && let Some(raw) = &s.hostile_get
    {
        return http_emulator::reply(http_emulator::status(200), "application/json", raw.clone());
    }
    let repo = s.repo.clone();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let repo_of = |segs: &[&str]| format!("{}/{}", segs[1], segs[2]);
    if segs.len() < 4 || segs[0] != "repos" {
        return error(404, "Not Found", "");
    }
    if repo_of(&segs) != repo {
        return error(404, "Not Found", "");
    }
    let json_body = || serde_json::from_slice::<Value>(body).ok();
    match (req.method.as_str(), &segs[3..]) {
        ("GET", ["pulls", n]) => {
            let pull = n
                .parse::<u64>()
                .ok()
                .and_then(|n| s.pulls.iter().find(|p| p.number == n));
            match pull {
                Some(p) => reply(200, pull_json(addr, &repo, p)),
                None => error(404, "Not Found", "pulls/pulls#get-a-pull-request"),
            }
        }
        ("GET", ["issues", n, "comments"]) => {
            let Ok(issue) = n.parse::<u64>() else {
                return error(404, "Not Found", "");
            };
            let per_page = query(&q, "per_page").unwrap_or(30).clamp(1, 100);
            let page = query(&q, "page").unwrap_or(1).max(1);
            let all: Vec<&Comment> = s.comments.iter().filter(|c| c.issue == issue).collect();
            let last = all.len().div_ceil(per_page).max(1);
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|c| comment_json(addr, &repo, c))
                .collect();
            let mut r = reply(200, Value::Array(items));
            if last > 1 {
                let link = |p: usize, rel: &str| {
                    format!(
                        "<http://{addr}/repos/{repo}/issues/{issue}/comments?per_page={per_page}&page={p}>; rel=\"{rel}\""
                    )
                };
                let mut links = Vec::new();
                if page > 1 {
                    links.push(link(page - 1, "prev"));
                }
                if page < last {
                    links.push(link(page + 1, "next"));
                    links.push(link(last, "last"));
                }
                if page > 1 {
                    links.push(link(1, "first"));
                }
                r.headers_mut()
                    .insert("link", links.join(", ").parse().unwrap());
            }
            r
        }
        ("POST", ["issues", n, "comments"]) => {
            let Ok(issue) = n.parse::<u64>() else {
                return error(404, "Not Found", "");
            };
            if s.denied.contains(&"comments") {
                return error(
                    403,
                    "Resource not accessible by integration",
                    "issues/comments#create-an-issue-comment",
                );
            }
            let Some(text) = json_body().and_then(|v| v.get("body")?.as_str().map(str::to_string))
            else {
                return validation("IssueComment", "body", "body is missing");
            };
            if text.chars().count() > BODY_LIMIT {
                return validation(
                    "IssueComment",
                    "body",
                    "body is too long (maximum is 65536 characters)",
                );
            }
            s.next_id += 1;
            let c = Comment {
                id: s.next_id,
                issue,
                body: text,
                user: "github-actions[bot]".into(),
            };
            s.comments.push(c.clone());
            reply(201, comment_json(addr, &repo, &c))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(404, "Not Found", "");
            };
            if s.denied.contains(&"comments") {
                return error(
                    403,
                    "Resource not accessible by integration",
                    "issues/comments#update-an-issue-comment",
                );
            }
            let Some(text) = json_body().and_then(|v| v.get("body")?.as_str().map(str::to_string))
            else {
                return validation("IssueComment", "body", "body is missing");
            };
            if text.chars().count() > BODY_LIMIT {
                return validation(
                    "IssueComment",
                    "body",
                    "body is too long (maximum is 65536 characters)",
                );
            }
            let Some(c) = s.comments.iter_mut().find(|c| c.id == id) else {
                return error(404, "Not Found", "issues/comments#update-an-issue-comment");
            };
            c.body = text;
            let c = c.clone();
            reply(200, comment_json(addr, &repo, &c))
        }
        ("POST", ["check-runs"]) => {
            if s.denied.contains(&"checks") {
                return error(
                    403,
                    "Resource not accessible by integration",
                    "checks/runs#create-a-check-run",
                );
            }
            let Some(v) = json_body() else {
                return error(
                    400,
                    "Problems parsing JSON",
                    "checks/runs#create-a-check-run",
                );
            };
            let get = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
            let (Some(name), Some(head_sha)) = (get("/name"), get("/head_sha")) else {
                return validation("CheckRun", "name", "name and head_sha are required");
            };
            let status = get("/status").unwrap_or_else(|| "queued".into());
            let conclusion = get("/conclusion");
            const CONCLUSIONS: [&str; 8] = [
                "action_required",
                "cancelled",
                "failure",
                "neutral",
                "success",
                "skipped",
                "stale",
                "timed_out",
            ];
            if status == "completed" && conclusion.is_none() {
                return validation(
                    "CheckRun",
                    "conclusion",
                    "conclusion is required when status is completed",
                );
            }
            if let Some(c) = &conclusion
                && !CONCLUSIONS.contains(&c.as_str())
            {
                return validation(
                    "CheckRun",
                    "conclusion",
                    "conclusion is not included in the list",
                );
            }
            let summary = get("/output/summary").unwrap_or_default();
            if summary.chars().count() > SUMMARY_LIMIT {
                return validation(
                    "CheckRun",
                    "summary",
                    "summary is too long (maximum is 65535 characters)",
                );
            }
            s.next_id += 1;
            let id = s.next_id;
            s.check_runs.push(CheckRun {
                name: name.clone(),
                head_sha: head_sha.clone(),
                status: status.clone(),
                conclusion: conclusion.clone(),
                title: get("/output/title").unwrap_or_default(),
                summary,
            });
            reply(
                201,
                json!({
                    "id": id,
                    "head_sha": head_sha,
                    "name": name,
                    "status": status,
                    "conclusion": conclusion,
                    "html_url": format!("https://github.com/{repo}/runs/{id}"),
                    "url": format!("http://{addr}/repos/{repo}/check-runs/{id}"),
                }),
            )
        }
        _ => error(404, "Not Found", ""),
    }
}
