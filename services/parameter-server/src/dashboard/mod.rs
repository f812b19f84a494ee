//! The web dashboard, on the HTTP port beside `/metrics` (`metrics_listen`):
//! read-only pages of jobs (state, progress), a job (live loss and accuracy
//! curves, its log, its settings), workers and sweeps (their results
//! table). The page and its script are embedded in the binary and load
//! nothing from elsewhere (a Content-Security-Policy says so to the
//! browser); their data comes from the JSON API under `/api`, which takes
//! the same bearer tokens as the gRPC job API and shows a caller what the
//! job API would.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::coordinator::Coordinator;
use crate::domain::{Api, Job, JobEvent, Principal, Sweep};
use crate::error::ServerError;
use crate::layers::Authenticate;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Nothing but this origin: no outside script, style, font or image.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Dashboard {
    coordinator: Arc<Coordinator>,
    authenticate: Authenticate,
}

/// The dashboard's routes, to merge with the metrics endpoint's.
pub fn router(coordinator: Arc<Coordinator>, authenticate: Authenticate) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/metrics", get(metrics))
        .route("/api/jobs/{id}/log", get(log))
        .route("/api/workers", get(workers))
        .route("/api/sweeps", get(sweeps))
        .route("/api/sweeps/{id}", get(sweep))
        .with_state(Dashboard { coordinator, authenticate })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// An API error: its HTTP status (from the gRPC code the job API would
/// give) and the same message.
struct ApiError(ServerError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.0.to_string();
        let status = match tonic::Status::from(self.0).code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, [(header::CACHE_CONTROL, "no-store")], Json(json!({ "error": message }))).into_response()
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        Self(e)
    }
}

type ApiResult = Result<Response, ApiError>;

fn reply(value: Value) -> ApiResult {
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(value)).into_response())
}

impl Dashboard {
    /// The caller, from its bearer token, if it may use the job API.
    fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let principal = (self.authenticate)(headers)?;
        principal.may_call(Api::Jobs)?;
        Ok(principal)
    }
}

#[derive(Debug, Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

fn job_value(job: &Job) -> Value {
    let mut value = serde_json::to_value(job).unwrap_or(Value::Null);
    value["waiting"] = json!(job.waiting);
    value
}

async fn jobs(State(d): State<Dashboard>, headers: HeaderMap) -> ApiResult {
    let principal = d.principal(&headers)?;
    let mut jobs = d.coordinator.list(&principal, &BTreeMap::new())?;
    jobs.sort_by(|a, b| (b.created_unix_ms, &b.id).cmp(&(a.created_unix_ms, &a.id)));
    reply(Value::Array(jobs.iter().map(|r| job_value(&r.job)).collect()))
}

async fn job(State(d): State<Dashboard>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let principal = d.principal(&headers)?;
    reply(job_value(&d.coordinator.get(&principal, &id)?.job))
}

/// The job's step metrics and evaluations after update `after`.
async fn metrics(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> ApiResult {
    let principal = d.principal(&headers)?;
    let (events, _) = d.coordinator.watch(&principal, &id, q.after)?;
    let (mut steps, mut evaluations) = (Vec::new(), Vec::new());
    for event in events {
        match event {
            JobEvent::Step(m) => steps.push(serde_json::to_value(m).unwrap_or(Value::Null)),
            JobEvent::Evaluation(e) => evaluations.push(serde_json::to_value(e).unwrap_or(Value::Null)),
            JobEvent::State(_) => {}
        }
    }
    reply(json!({ "steps": steps, "evaluations": evaluations }))
}

async fn log(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> ApiResult {
    let principal = d.principal(&headers)?;
    let (entries, _) = d.coordinator.job_log(&principal, &id, q.after, false)?;
    reply(serde_json::to_value(entries).unwrap_or(Value::Null))
}

async fn workers(State(d): State<Dashboard>, headers: HeaderMap) -> ApiResult {
    let principal = d.principal(&headers)?;
    reply(serde_json::to_value(d.coordinator.workers(&principal)?).unwrap_or(Value::Null))
}

fn sweep_value(sweep: &Sweep) -> Value {
    let trials: Vec<Value> = sweep
        .trials
        .iter()
        .map(|t| {
            let params: serde_json::Map<String, Value> =
                t.params.iter().map(|(field, value)| (field.clone(), json!(value))).collect();
            let job = t.job.as_ref().map(|j| {
                json!({
                    "id": j.id, "state": j.state, "step": j.step, "total_updates": j.total_updates,
                    "validation_accuracy": j.last_evaluation.as_ref().and_then(|e| e.validation_accuracy),
                    "test_accuracy": j.last_evaluation.as_ref().map(|e| e.test_accuracy),
                })
            });
            json!({ "index": t.index, "params": params, "job": job })
        })
        .collect();
    json!({
        "id": sweep.id, "name": sweep.name, "state": sweep.state, "error": sweep.error,
        "created_unix_ms": sweep.created_unix_ms, "owner": sweep.owner, "best_trial": sweep.best_trial,
        "fields": sweep.spec.search.params.iter().map(|p| p.field.clone()).collect::<Vec<_>>(),
        "trials": trials,
    })
}

async fn sweeps(State(d): State<Dashboard>, headers: HeaderMap) -> ApiResult {
    let principal = d.principal(&headers)?;
    reply(Value::Array(d.coordinator.list_sweeps(&principal)?.iter().map(sweep_value).collect()))
}

async fn sweep(State(d): State<Dashboard>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let principal = d.principal(&headers)?;
    reply(sweep_value(&d.coordinator.get_sweep(&principal, &id)?))
}
