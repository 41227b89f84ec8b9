//! The web desk (`/desk`): where approvers see pending approval tasks live and approve, deny
//! or modify them from a browser.
//!
//! Sign-in takes an admin token (`operator` or `approver`) once, in a form; the desk then
//! works with a session: a random 256-bit id in a cookie (`HttpOnly`, `SameSite=Strict`,
//! `Path=/desk`, `Secure` when the gateway's public URL is https) that lives 8 hours and ends
//! with a sign-out, a restart, or the revocation or expiry of the token it was opened with
//! (checked on every request). The page's data and votes go through `/desk/api/...`, which
//! runs the admin API's approval handlers with the session's admin, so the rules (scopes,
//! owners, quorums, schema and policy checks on modifications) are the same code.
//!
//! Invariants:
//! - Every desk response carries a strict Content-Security-Policy (`default-src 'none'`;
//!   scripts, styles and connections from the gateway itself only; no inline script or
//!   style; no framing), `nosniff`, `Referrer-Policy: same-origin` and `no-store`.
//! - A change (a vote, a sign-out) needs the session's CSRF token in `X-Warden-CSRF`
//!   (compared in constant time); without it the answer is 403 and the attempt is recorded.
//! - Every API request, sign-in (also a failed one, which counts against the address's
//!   limit of unauthenticated requests) and sign-out has an audit record whose principal
//!   is `admin:<name>`; the live stream is recorded when it opens.
//! - The page renders task data with `textContent` only; nothing from a task is parsed as
//!   HTML.
//! - Sessions are bounded ([`MAX_SESSIONS`]; the oldest go first) and held in memory only.
//!
//! Threat: cross-site request forgery against approvers, script injection through task
//! contents (an agent controls arguments and reason), session theft or fixation, and a
//! desk that keeps deciding after its token was revoked.

use crate::admin::approvals as votes;
use crate::audit::Outcome;
use crate::auth::{self, Admin, AuthError};
use crate::gateway::Gateway;
use crate::transport::slot::AuditSlot;
use crate::transport::wire;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Name of the session cookie.
pub const COOKIE: &str = "warden_desk";
/// How long a desk session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most desk sessions held at once.
pub const MAX_SESSIONS: usize = 1024;
/// The header a change must carry the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-warden-csrf";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("desk.html");
const LOGIN: &str = include_str!("login.html");
const SCRIPT: &str = include_str!("desk.js");
const STYLE: &str = include_str!("desk.css");

/// One signed-in approver.
#[derive(Debug, Clone)]
struct Session {
    admin: Admin,
    csrf: String,
    expires: Instant,
}

/// The desk's state: the gateway and the open sessions.
pub struct Desk {
    gateway: Arc<Gateway>,
    sessions: Mutex<HashMap<String, Session>>,
    secure: bool,
    streams: CancellationToken,
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

type Shared = State<Arc<Desk>>;

fn random_token() -> Option<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Escapes text for an HTML attribute or element.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Adds the desk's security headers to `response`.
fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with the latter, browsers send `Origin: null` on the
    // desk's own POSTs, which the gateway's Origin check rightly refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    harden((status, Json(json!({ "error": message }))).into_response())
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl Desk {
    /// The session `headers` name, if it is open and its token still stands.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie_value(headers)?;
        let session = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
            sessions.get(&id)?.clone()
        };
        if !self.token_stands(&session.admin.token_id) {
            self.end(&id);
            return None;
        }
        Some((id, session))
    }

    /// Whether the admin token a session was opened with is still valid.
    fn token_stands(&self, token_id: &str) -> bool {
        votes::token_stands(&self.gateway, token_id)
    }

    fn open(&self, admin: Admin) -> Option<String> {
        let id = random_token()?;
        let csrf = random_token()?;
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                admin,
                csrf,
                expires: Instant::now() + SESSION_TTL,
            },
        );
        Some(id)
    }

    fn end(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    fn cookie(&self, id: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/desk; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The desk's router (merged into the gateway's, behind its Host and Origin checks).
/// `secure` marks the session cookie `Secure` (the gateway is reached over https);
/// cancelling `streams` ends the live streams at shutdown.
pub fn router(gateway: Arc<Gateway>, secure: bool, streams: CancellationToken) -> Router {
    let desk = Arc::new(Desk {
        gateway,
        sessions: Mutex::new(HashMap::new()),
        secure,
        streams,
    });
    let api = Router::new()
        .route("/desk/api/me", get(me))
        .route("/desk/api/events", get(events))
        .route("/desk/api/approvals", get(votes::list_approvals))
        .route("/desk/api/approvals/{id}", get(votes::show_approval))
        .route("/desk/api/approvals/{id}/approve", post(votes::approve))
        .route("/desk/api/approvals/{id}/deny", post(votes::deny))
        .route(
            "/desk/api/approvals/{id}/modify",
            post(votes::modify).layer(axum::extract::DefaultBodyLimit::max(
                votes::MAX_VOTE_BODY + 1,
            )),
        )
        .route("/desk/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            desk.clone(),
            require_session,
        ))
        .with_state(desk.gateway.clone());
    Router::new()
        .route("/desk", get(page))
        .route("/desk/", get(page))
        .route("/desk/login", post(login))
        .route("/desk/desk.js", get(script))
        .route("/desk/desk.css", get(style))
        .with_state(desk)
        .merge(api)
}

async fn script() -> Response {
    harden(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
    )
}

async fn style() -> Response {
    harden(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response())
}

fn html(body: String) -> Response {
    harden(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn login_page(message: &str) -> Response {
    html(LOGIN.replace("{{MESSAGE}}", &escape(message)))
}

/// The desk page for a session, else the sign-in page.
async fn page(State(desk): Shared, headers: HeaderMap) -> Response {
    match desk.session(&headers) {
        Some((_, s)) => html(
            PAGE.replace("{{CSRF}}", &escape(&s.csrf))
                .replace("{{NAME}}", &escape(&s.admin.name))
                .replace("{{ROLE}}", &escape(&s.admin.role)),
        ),
        None => login_page(""),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Signs in with an admin token: a new session (a cookie), or the sign-in page again.
async fn login(State(desk): Shared, req: Request) -> Response {
    let peer = crate::transport::http::peer(req.extensions());
    let mut record = desk.gateway.audit().open("desk login", peer);
    let bytes = match axum::body::to_bytes(req.into_body(), 8 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return wire::finish(
                record,
                Outcome::Invalid,
                error(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"),
            )
            .await;
        }
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&bytes) else {
        return wire::finish(
            record,
            Outcome::Invalid,
            login_page("Paste an admin token."),
        )
        .await;
    };
    let header = format!("Bearer {}", form.token.trim());
    match auth::authenticate_admin(desk.gateway.store(), Some(&header), None) {
        Ok(admin) => {
            record.record().principal = Some(format!("admin:{}", admin.name));
            record.record().token_id = Some(admin.token_id.clone());
            let Some(id) = desk.open(admin) else {
                return wire::finish(
                    record,
                    Outcome::Error,
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no randomness for a session",
                    ),
                )
                .await;
            };
            let mut r = Redirect::to("/desk").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, desk.cookie(&id, SESSION_TTL.as_secs()));
            wire::finish(record, Outcome::Ok, harden(r)).await
        }
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store failed; desk sign-in refused");
            wire::finish(
                record,
                Outcome::Error,
                error(StatusCode::SERVICE_UNAVAILABLE, "the store failed"),
            )
            .await
        }
        Err(e) => {
            record.record().error_class = Some(e.class().to_owned());
            let page = login_page("That is not a valid admin token.");
            let page = (StatusCode::UNAUTHORIZED, page).into_response();
            wire::finish_anonymous(&desk.gateway, record, peer, Outcome::Unauthenticated, page)
                .await
        }
    }
}

/// Authenticates a desk API request by its session (and a change by its CSRF token),
/// records it, and hands the handlers the session's admin and the record.
async fn require_session(State(desk): Shared, mut req: Request, next: Next) -> Response {
    let path: String = req.uri().path().chars().take(128).collect();
    let peer = crate::transport::http::peer(req.extensions());
    let mut record = desk
        .gateway
        .audit()
        .open(format!("desk {} {path}", req.method()), peer);
    let Some((id, session)) = desk.session(req.headers()) else {
        record.record().error_class = Some("no_session".into());
        let r = error(StatusCode::UNAUTHORIZED, "sign in to the desk first");
        return wire::finish_anonymous(&desk.gateway, record, peer, Outcome::Unauthenticated, r)
            .await;
    };
    record.record().principal = Some(format!("admin:{}", session.admin.name));
    record.record().token_id = Some(session.admin.token_id.clone());
    if req.method() != Method::GET {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent, &session.csrf) {
            record.record().error_class = Some("csrf".into());
            let r = error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
            return wire::finish(record, Outcome::Denied, r).await;
        }
        if !desk.gateway.audit().healthy() {
            record.record().error_class = Some("audit".into());
            let r = error(StatusCode::SERVICE_UNAVAILABLE, wire::AUDIT_UNAVAILABLE);
            return wire::finish(record, Outcome::Error, r).await;
        }
    }
    let slot = AuditSlot::new(record);
    req.extensions_mut().insert(session.admin.clone());
    req.extensions_mut().insert(slot.clone());
    req.extensions_mut().insert(SessionId(id));
    req.extensions_mut().insert(desk.clone());
    let response = harden(next.run(req).await);
    match slot.take() {
        Some(record) => wire::recorded(record, response).await,
        None => response,
    }
}

/// The session id of a desk request (for sign-out).
#[derive(Debug, Clone)]
struct SessionId(String);

async fn me(Extension(admin): Extension<Admin>) -> Response {
    Json(json!({"name": admin.name, "role": admin.role})).into_response()
}

async fn logout(
    Extension(desk): Extension<Arc<Desk>>,
    Extension(SessionId(id)): Extension<SessionId>,
) -> Response {
    desk.end(&id);
    let mut r = Json(json!({"signed_out": true})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, desk.cookie("", 0));
    r
}

/// The live stream of a desk session (see `admin::approvals::live_tasks`); it also ends at
/// sign-out.
async fn events(
    Extension(desk): Extension<Arc<Desk>>,
    Extension(admin): Extension<Admin>,
    Extension(SessionId(id)): Extension<SessionId>,
) -> Response {
    let d = desk.clone();
    let open = move || {
        d.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&id)
    };
    votes::live_tasks(
        desk.gateway.clone(),
        &admin,
        Box::new(open),
        Some(desk.streams.clone()),
    )
}
