//! GitHub's REST API, for `benchstack comment --github`: the pull request of the current
//! Actions run (from the event payload; for a comment on a pull request, from the API), its
//! issue comments (listed page by page through the
//! `Link` header, the one holding our marker updated in place), and check runs.
//!
//! Sources: "Variables" (docs.github.com/en/actions/reference/variables-reference:
//! `GITHUB_API_URL`, `GITHUB_REPOSITORY`, `GITHUB_EVENT_PATH`, `GITHUB_EVENT_NAME`,
//! `GITHUB_SHA`); the `pull_request` webhook payload (`number`, `pull_request.head.sha`,
//! `pull_request.head.repo.full_name`, `pull_request.base.repo.full_name`); the
//! `issue_comment` payload (`issue.number`; `issue.pull_request`, present only when the issue
//! is a pull request; no head commit) and REST "Get a pull request" (GET
//! `/repos/{owner}/{repo}/pulls/{n}`: `head.sha`, `head.repo` (null when the fork was
//! deleted), `base.repo`; 404 for an unknown number); REST "Issue
//! comments" (GET/POST `/repos/{owner}/{repo}/issues/{n}/comments`, PATCH
//! `/repos/{owner}/{repo}/issues/comments/{id}`), "Check runs" (POST
//! `/repos/{owner}/{repo}/check-runs`), "Using pagination in the REST API" (`per_page` ≤ 100,
//! `Link: <…>; rel="next"`), "Rate limits" (403/429 with `x-ratelimit-remaining: 0` and
//! `x-ratelimit-reset`), API version header `X-GitHub-Api-Version: 2022-11-28`.
//!
//! Nothing here reads the environment or prints: [`Client::from_vars`] takes the variables,
//! the command prints. Responses are bounded ([`MAX_BODY`]) and parsed without panicking.

use std::time::Duration;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// The largest response body read: a page of 100 comments of 65,536 characters each is
/// about 6.6 MB of text; anything larger is not GitHub answering a listing.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Pages of comments read before giving up (100 per page).
pub const MAX_PAGES: usize = 100;
const API_VERSION: &str = "2022-11-28";
/// Retries after a 5xx on a read, or a `retry-after` (0.2, 0.4, 0.8 s apart for a 5xx).
const RETRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("{0} is not set: `benchstack comment --github` runs inside a GitHub Actions job")]
    MissingVar(&'static str),
    #[error("GITHUB_EVENT_PATH {path}: {message}")]
    Event { path: String, message: String },
    #[error(
        "this {event} event has no pull request: `comment --github` comments on pull requests (run it from a `pull_request` workflow, or an `issue_comment` one on a pull request)"
    )]
    NoPullRequest { event: String },
    #[error(
        "issue #{number} is not a pull request: this {event} event is a comment on a plain issue, and `comment --github` comments on pull requests (run the workflow only for pull requests: `if: github.event.issue.pull_request`)"
    )]
    NotAPullRequest { number: u64, event: String },
    #[error(
        "refusing to comment on pull request #{number}: it comes from the fork {head}, not {base}. A workflow that runs a fork's code with a token that can write is how \"pwn requests\" happen; pass --allow-fork if this workflow is safe for forks"
    )]
    Fork {
        number: u64,
        head: String,
        base: String,
    },
    #[error("{what}: {source}")]
    Network {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: GitHub answered {status}: {message}{hint}")]
    Api {
        what: String,
        status: u16,
        message: String,
        hint: String,
        /// Seconds GitHub asked to wait (`retry-after`, secondary rate limits).
        retry_after: Option<u64>,
    },
    #[error("{what}: GitHub's answer could not be read: {message}")]
    BadResponse { what: String, message: String },
}

/// The run's repository and pull request, from the Actions variables and the event payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// `https://api.github.com`, or a GitHub Enterprise Server's `https://HOST/api/v3`.
    pub api_url: String,
    /// `owner/name`.
    pub repository: String,
    pub token: String,
    pub event_name: String,
    pub pull_request: PullRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// The head commit: what a check run is attached to.
    pub head_sha: String,
    /// `owner/name` of the head and base repositories (the head's is None when the fork
    /// was deleted).
    pub head_repo: Option<String>,
    pub base_repo: String,
}

impl PullRequest {
    pub fn is_fork(&self) -> bool {
        self.head_repo.as_deref() != Some(self.base_repo.as_str())
    }
}

/// The pull request in an event payload (`pull_request` and `pull_request_target` events).
pub fn pull_request_of(event: &Value) -> Option<PullRequest> {
    let pr = event.get("pull_request")?;
    let number = pr
        .get("number")
        .or_else(|| event.get("number"))
        .and_then(Value::as_u64)?;
    pull_request_from(pr, number)
}

/// A pull request object (as in a `pull_request` payload and "Get a pull request").
fn pull_request_from(pr: &Value, number: u64) -> Option<PullRequest> {
    let head_sha = pr.pointer("/head/sha")?.as_str()?.to_string();
    let head_repo = pr
        .pointer("/head/repo/full_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let base_repo = pr.pointer("/base/repo/full_name")?.as_str()?.to_string();
    Some(PullRequest {
        number,
        head_sha,
        head_repo,
        base_repo,
    })
}

/// What an event payload is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A `pull_request` or `pull_request_target` event: the pull request as the payload has it.
    PullRequest(PullRequest),
    /// An `issue_comment` event on a pull request: its number only (the payload has no head
    /// commit), the rest read from the API.
    CommentOnPullRequest(u64),
}

/// What `event` (named `event_name`) is about: a pull request, a comment on one, or nothing
/// `comment --github` can post to.
pub fn subject_of(event: &Value, event_name: &str) -> Result<Subject, GithubError> {
    if let Some(pr) = pull_request_of(event) {
        return Ok(Subject::PullRequest(pr));
    }
    let no = || GithubError::NoPullRequest {
        event: event_name.to_string(),
    };
    let issue = event
        .get("issue")
        .filter(|i| i.is_object())
        .ok_or_else(no)?;
    let number = issue.get("number").and_then(Value::as_u64).ok_or_else(no)?;
    // "issue.pull_request": present (an object of URLs) only when the issue is a pull request.
    match issue.get("pull_request") {
        Some(Value::Object(_)) => Ok(Subject::CommentOnPullRequest(number)),
        _ => Err(GithubError::NotAPullRequest {
            number,
            event: event_name.to_string(),
        }),
    }
}

/// A pull request from a fork, refused unless `allow_fork`.
fn refuse_fork(pr: &PullRequest, allow_fork: bool) -> Result<(), GithubError> {
    if pr.is_fork() && !allow_fork {
        return Err(GithubError::Fork {
            number: pr.number,
            head: pr
                .head_repo
                .clone()
                .unwrap_or_else(|| "a deleted repository".into()),
            base: pr.base_repo.clone(),
        });
    }
    Ok(())
}

/// The Actions variables and what the event is about, before any request.
struct Run {
    api_url: String,
    repository: String,
    token: String,
    event_name: String,
    subject: Subject,
}

impl Run {
    /// From the Actions variables (`var` reads one; empty counts as unset) and the event
    /// file they name.
    fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Run, GithubError> {
        let get = |name: &'static str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or(GithubError::MissingVar(name))
        };
        let api_url = var("GITHUB_API_URL")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string();
        let repository = get("GITHUB_REPOSITORY")?;
        let token = get("GITHUB_TOKEN")?;
        let path = get("GITHUB_EVENT_PATH")?;
        let event_name = var("GITHUB_EVENT_NAME").unwrap_or_else(|| "unknown".into());
        let bad = |message: String| GithubError::Event {
            path: path.clone(),
            message,
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| bad(format!("cannot read it: {e}")))?
            .len();
        if size > MAX_BODY as u64 {
            return Err(bad(format!("{size} bytes is not an event payload")));
        }
        let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let event: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let subject = subject_of(&event, &event_name)?;
        Ok(Run {
            api_url,
            repository,
            token,
            event_name,
            subject,
        })
    }
}

/// What happened to the comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Created { id: u64, url: String },
    Updated { id: u64, url: String },
}

/// A REST client for one repository.
pub struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    ctx: Context,
}

/// A response: status, headers, JSON body (Null when empty).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Client {
    pub fn new(ctx: Context) -> Result<Client, GithubError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("benchstack/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            // A redirect would carry the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GithubError::Network {
                what: "building the HTTP client".into(),
                source: e,
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GithubError::BadResponse {
                what: "starting the HTTP client's runtime".into(),
                message: e.to_string(),
            })?;
        Ok(Client { http, runtime, ctx })
    }

    /// The client for the run the Actions variables describe (`var` reads one; empty counts
    /// as unset): its pull request from the event payload, or, for an `issue_comment` event,
    /// read from the API (GET `/repos/{owner}/{repo}/pulls/{n}`). A pull request from a fork
    /// is refused unless `allow_fork`, before anything is written.
    pub fn from_vars(
        var: &dyn Fn(&str) -> Option<String>,
        allow_fork: bool,
    ) -> Result<Client, GithubError> {
        let run = Run::from_vars(var)?;
        let (pull_request, fetch) = match run.subject {
            Subject::PullRequest(pr) => (pr, None),
            // Only the number until the API answers.
            Subject::CommentOnPullRequest(number) => (
                PullRequest {
                    number,
                    head_sha: String::new(),
                    head_repo: None,
                    base_repo: String::new(),
                },
                Some(number),
            ),
        };
        let mut client = Client::new(Context {
            api_url: run.api_url,
            repository: run.repository,
            token: run.token,
            event_name: run.event_name,
            pull_request,
        })?;
        if let Some(number) = fetch {
            client.ctx.pull_request = client.pull_request(number)?;
        }
        refuse_fork(&client.ctx.pull_request, allow_fork)?;
        Ok(client)
    }

    /// Pull request `number` as the API describes it ("Get a pull request").
    pub fn pull_request(&self, number: u64) -> Result<PullRequest, GithubError> {
        let what = format!("reading pull request #{number}");
        let url = self.url(&format!("/repos/{}/pulls/{number}", self.ctx.repository));
        let a = self.call(&what, Method::GET, &url, None)?;
        pull_request_from(&a.body, number).ok_or_else(|| GithubError::BadResponse {
            what,
            message: "expected a pull request with head.sha and base.repo.full_name".into(),
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.ctx.api_url)
    }

    /// One request; statuses other than 2xx become [`GithubError::Api`] with a hint.
    /// One request, again after what GitHub asks to wait (`retry-after` up to a minute:
    /// secondary rate limits, which reject the request unprocessed) and, for reads only,
    /// after a 5xx (a write that failed with 5xx may have happened: never repeated).
    fn call(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GithubError> {
        let mut attempt = 0u32;
        loop {
            match self.call_once(what, method.clone(), url, body) {
                Err(GithubError::Api {
                    status,
                    retry_after,
                    ..
                }) if attempt < RETRIES
                    && (retry_after.is_some_and(|s| s <= 60)
                        || (status >= 500 && method == Method::GET)) =>
                {
                    let wait = retry_after
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_millis(200 << attempt));
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn call_once(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GithubError> {
        self.runtime.block_on(async {
            let mut req = self
                .http
                .request(method, url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .bearer_auth(&self.ctx.token);
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(b).unwrap_or_default());
            }
            let mut resp = req.send().await.map_err(|e| GithubError::Network {
                what: what.to_string(),
                source: e,
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let mut bytes = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if bytes.len() + c.len() > MAX_BODY {
                            return Err(GithubError::BadResponse {
                                what: what.to_string(),
                                message: format!("the body is over {MAX_BODY} bytes"),
                            });
                        }
                        bytes.extend_from_slice(&c);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(GithubError::Network {
                            what: what.to_string(),
                            source: e,
                        });
                    }
                }
            }
            let parsed: Result<Value, _> = if bytes.is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_slice(&bytes)
            };
            if !status.is_success() {
                let message = parsed.as_ref().ok().map(error_message).unwrap_or_else(|| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
                });
                let retry_after = matches!(status.as_u16(), 403 | 429)
                    .then(|| {
                        headers
                            .get("retry-after")?
                            .to_str()
                            .ok()?
                            .trim()
                            .parse()
                            .ok()
                    })
                    .flatten();
                return Err(GithubError::Api {
                    what: what.to_string(),
                    status: status.as_u16(),
                    message,
                    hint: hint(status, &headers),
                    retry_after,
                });
            }
            let body = parsed.map_err(|e| GithubError::BadResponse {
                what: what.to_string(),
                message: format!("not JSON: {e}"),
            })?;
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }

    /// The pull request's comments whose body holds `key`, oldest first: `(id, html_url)`.
    pub fn find_comments(&self, key: &str) -> Result<Vec<(u64, String)>, GithubError> {
        let what = format!(
            "listing the comments of pull request #{}",
            self.ctx.pull_request.number
        );
        let mut url = self.url(&format!(
            "/repos/{}/issues/{}/comments?per_page=100",
            self.ctx.repository, self.ctx.pull_request.number
        ));
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let a = self.call(&what, Method::GET, &url, None)?;
            let Some(items) = a.body.as_array() else {
                return Err(GithubError::BadResponse {
                    what,
                    message: "expected a list of comments".into(),
                });
            };
            for c in items {
                let body = c.get("body").and_then(Value::as_str).unwrap_or("");
                if let (true, Some(id)) = (body.contains(key), c.get("id").and_then(Value::as_u64))
                {
                    let url = c.get("html_url").and_then(Value::as_str).unwrap_or("");
                    found.push((id, url.to_string()));
                }
            }
            match next_link(&a.headers) {
                // Only pages of the same API: the token goes with every request.
                Some(next) if next.starts_with(&format!("{}/", self.ctx.api_url)) => url = next,
                Some(next) => {
                    return Err(GithubError::BadResponse {
                        what,
                        message: format!("the next page {next} is not on {}", self.ctx.api_url),
                    });
                }
                None => return Ok(found),
            }
        }
        Err(GithubError::BadResponse {
            what,
            message: format!("more than {MAX_PAGES} pages of comments"),
        })
    }

    /// Creates the comment, or updates the latest one holding `key` (the marker's identity).
    pub fn upsert_comment(&self, key: &str, body: &str) -> Result<Posted, GithubError> {
        let existing = self.find_comments(key)?;
        let payload = json!({ "body": body });
        if let Some((id, _)) = existing.last() {
            let url = self.url(&format!(
                "/repos/{}/issues/comments/{id}",
                self.ctx.repository
            ));
            let a = self.call(
                &format!("updating comment {id}"),
                Method::PATCH,
                &url,
                Some(&payload),
            )?;
            return Ok(Posted::Updated {
                id: *id,
                url: html_url(&a.body),
            });
        }
        let url = self.url(&format!(
            "/repos/{}/issues/{}/comments",
            self.ctx.repository, self.ctx.pull_request.number
        ));
        let what = format!(
            "commenting on pull request #{}",
            self.ctx.pull_request.number
        );
        let a = self.call(&what, Method::POST, &url, Some(&payload))?;
        let id =
            a.body
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| GithubError::BadResponse {
                    what: what.clone(),
                    message: format!("answered {} without the comment's id", a.status),
                })?;
        Ok(Posted::Created {
            id,
            url: html_url(&a.body),
        })
    }

    /// A completed check run on the pull request's head commit: `conclusion` is `success`,
    /// `failure` or `neutral`; `title` one line; `summary` markdown (≤ 65,535 characters).
    pub fn create_check_run(
        &self,
        name: &str,
        conclusion: &str,
        title: &str,
        summary: &str,
    ) -> Result<String, GithubError> {
        let url = self.url(&format!("/repos/{}/check-runs", self.ctx.repository));
        let payload = json!({
            "name": name,
            "head_sha": self.ctx.pull_request.head_sha,
            "status": "completed",
            "conclusion": conclusion,
            "output": { "title": title, "summary": summary },
        });
        let a = self.call(
            &format!("creating the check run \"{name}\""),
            Method::POST,
            &url,
            Some(&payload),
        )?;
        Ok(html_url(&a.body))
    }
}

fn html_url(v: &Value) -> String {
    v.get("html_url")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// GitHub's error body: `message`, and each of `errors[]` (422 validation failures).
fn error_message(v: &Value) -> String {
    let mut m = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)")
        .chars()
        .take(500)
        .collect::<String>();
    if let Some(errors) = v.get("errors").and_then(Value::as_array) {
        let details: Vec<String> = errors
            .iter()
            .take(5)
            .map(|e| match e {
                Value::String(s) => s.chars().take(300).collect(),
                e => e
                    .get("message")
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(300).collect())
                    .unwrap_or_else(|| e.to_string().chars().take(300).collect()),
            })
            .collect();
        if !details.is_empty() {
            m.push_str(&format!(" ({})", details.join("; ")));
        }
    }
    m
}

/// What to do about an error status.
fn hint(status: StatusCode, headers: &HeaderMap) -> String {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let limited = header("x-ratelimit-remaining") == Some("0");
    match status.as_u16() {
        401 => ". The token was refused: pass the job's token as GITHUB_TOKEN (`env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`)".into(),
        403 | 429 if limited || header("retry-after").is_some() => {
            let when = header("x-ratelimit-reset")
                .and_then(|r| r.parse::<u64>().ok())
                .map(|r| format!(" until {} (x-ratelimit-reset)", humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(r))))
                .or_else(|| header("retry-after").map(|s| format!(" for {s} s (retry-after)")))
                .unwrap_or_default();
            format!(". Rate limited{when}: run it again later")
        }
        403 => ". The token may not do this: give the job `permissions: pull-requests: write` (and `checks: write` for --check)".into(),
        404 => ". The repository or pull request was not found, or the token cannot see it (GITHUB_REPOSITORY, the event's pull request number)".into(),
        422 => ". GitHub refused the content (a comment or check summary is limited to 65,536 characters)".into(),
        _ => String::new(),
    }
}

/// The `rel="next"` URL of a `Link` header (RFC 8288, as GitHub writes it).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| {
            target
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header_as_github_writes_it() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            "<https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2>; rel=\"next\", <https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2")
        );
        h.insert("link", "<x>; rel=\"prev\"".parse().unwrap());
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn a_pull_request_event_gives_number_head_and_whether_it_is_a_fork() {
        let event = json!({
            "action": "synchronize",
            "number": 7,
            "pull_request": {
                "number": 7,
                "head": {"sha": "abc", "repo": {"full_name": "someone/fork"}},
                "base": {"sha": "def", "repo": {"full_name": "owner/repo"}}
            }
        });
        let pr = pull_request_of(&event).unwrap();
        assert_eq!(pr.number, 7);
        assert_eq!(pr.head_sha, "abc");
        assert!(pr.is_fork());
        // A deleted fork has `head.repo: null`: still a fork.
        let mut gone = event.clone();
        gone["pull_request"]["head"]["repo"] = Value::Null;
        assert!(pull_request_of(&gone).unwrap().is_fork());
        assert_eq!(pull_request_of(&json!({"ref": "refs/heads/main"})), None);
        assert_eq!(pull_request_of(&json!({"pull_request": "x"})), None);
    }

    #[test]
    fn an_issue_comment_event_is_a_pull_request_only_with_issue_pull_request() {
        let on_pr = json!({
            "action": "created",
            "issue": {"number": 12, "pull_request": {"url": "https://api.github.com/repos/o/r/pulls/12"}},
            "comment": {"body": "/benchstack compare"}
        });
        assert_eq!(
            subject_of(&on_pr, "issue_comment").unwrap(),
            Subject::CommentOnPullRequest(12)
        );
        let plain = json!({"action": "created", "issue": {"number": 5}, "comment": {}});
        let e = subject_of(&plain, "issue_comment").unwrap_err();
        assert!(
            e.to_string().starts_with("issue #5 is not a pull request"),
            "{e}"
        );
        for hostile in [
            json!({"issue": {"number": "12", "pull_request": {}}}),
            json!({"issue": {"number": -1, "pull_request": {}}}),
            json!({"issue": 7}),
            json!([]),
        ] {
            assert!(matches!(
                subject_of(&hostile, "issue_comment"),
                Err(GithubError::NoPullRequest { .. })
            ));
        }
        // A null pull_request is a plain issue.
        let null = json!({"issue": {"number": 5, "pull_request": null}});
        assert!(matches!(
            subject_of(&null, "issue_comment"),
            Err(GithubError::NotAPullRequest { number: 5, .. })
        ));
    }

    #[test]
    fn error_bodies_of_any_shape_become_a_message() {
        assert_eq!(
            error_message(
                &json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "custom", "field": "body", "message": "body is too long (maximum is 65536 characters)"}]})
            ),
            "Validation Failed (body is too long (maximum is 65536 characters))"
        );
        assert_eq!(error_message(&json!([1, 2])), "(no message)");
        assert_eq!(
            error_message(&json!({"message": 5, "errors": "x"})),
            "(no message)"
        );
    }
}
