//! The admin API: a request's way through the checks (the local operator, the token), the
//! routing table and its endpoint's handler. Handlers return [`ApiError`]s, which become
//! responses in one place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

use super::auth::{authorized, not_local, refuse};
use super::reply::{ApiError, ok, reply, respond};
use super::report::{app_status, deploy_outcome, status};
use super::routes::{Endpoint, Routed, route_of};
use super::wire::{
    Aborted, CanaryRequest, CanarySet, ClearRequest, Cleared, DeployQuery, Promoted,
    QuarantineList, Undeployed, UpgradeStarted,
};
use super::{sessions, upload};
use crate::deploy::{DeployMode, Registry};
use crate::error::Error;
use crate::server::{Body, RequestBody};
use crate::session::Sessions;

/// Largest JSON body the admin API accepts.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// The admin listener's shared state: the registry, the sessions and whether the host takes
/// traffic.
#[derive(Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    ready: AtomicBool,
    /// One permit per upload being received or deployed (`uploads.max_concurrent`).
    uploads: Arc<tokio::sync::Semaphore>,
}

impl Admin {
    /// The admin surface of `registry` and `sessions`; ready until [`Admin::set_not_ready`].
    pub fn new(registry: Arc<Registry>, sessions: Arc<Sessions>) -> Admin {
        let uploads = registry.config().uploads.max_concurrent;
        Admin {
            registry,
            sessions,
            ready: AtomicBool::new(true),
            uploads: Arc::new(tokio::sync::Semaphore::new(uploads)),
        }
    }

    /// From now on `/readyz` answers 503: a graceful shutdown has started.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Serves one admin request.
pub(crate) async fn handle(admin: Arc<Admin>, req: Request<RequestBody>) -> Response<Body> {
    let token = admin.registry.config().admin_token.as_deref();
    if token.is_none()
        && let Some(why) = not_local(&req)
    {
        return refuse(req, ApiError::Forbidden(why).into_response()).await;
    }
    let routed = route_of(req.method(), req.uri().path());
    let public = matches!(&routed, Ok(Routed { endpoint: Ok(e), .. }) if e.is_public());
    if !public && !authorized(token, req.headers()) {
        return refuse(req, ApiError::Unauthorized.into_response()).await;
    }
    reply(dispatch(&admin, routed, req).await)
}

async fn dispatch(
    admin: &Admin,
    routed: Result<Routed, ApiError>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let routed = routed?;
    let registry = &admin.registry;
    let app = routed.app.unwrap_or_default();
    if routed.app_sessions && registry.app(&app).is_none() {
        return Err(Error::UnknownApp(app).into());
    }
    let id = routed.id.unwrap_or_default();
    Ok(match routed.endpoint? {
        Endpoint::Dashboard => {
            respond(StatusCode::OK, "text/html; charset=utf-8", super::DASHBOARD)
        }
        Endpoint::Health => respond(StatusCode::OK, "text/plain", "ok\n"),
        Endpoint::Ready if admin.is_ready() => respond(StatusCode::OK, "text/plain", "ready\n"),
        Endpoint::Ready => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
        Endpoint::Status => ok(&status(registry)),
        Endpoint::Metrics => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            registry.metrics().encode(),
        ),
        Endpoint::Deploy => deploy(admin, req).await?,
        Endpoint::Upgrade => upgrade()?,
        Endpoint::Quarantine => ok(&QuarantineList {
            quarantine: registry.quarantine(),
        }),
        Endpoint::ClearQuarantine => {
            let request: ClearRequest =
                read_json(req, r#"{"app": "hello", "version": "2.0.0"}"#).await?;
            let cleared = registry.clear_quarantine(&request.app, &request.version)?;
            ok(&Cleared { cleared })
        }
        Endpoint::App => match registry.app(&app) {
            Some(slot) => ok(&app_status(&slot)),
            None => return Err(Error::UnknownApp(app).into()),
        },
        Endpoint::Undeploy => undeploy(registry, app).await?,
        Endpoint::Rollback => ok(&deploy_outcome(registry, &registry.rollback(&app).await?)),
        Endpoint::SetCanary => set_canary(registry, app, req).await?,
        Endpoint::Promote => {
            let version = registry.promote(&app).await?;
            let active = version.info().version.clone();
            ok(&Promoted { app, active })
        }
        Endpoint::AbortCanary => {
            let version = registry.abort_canary(&app).await?;
            let aborted = version.info().version.clone();
            ok(&Aborted { app, aborted })
        }
        Endpoint::Sessions => {
            sessions::list(&admin.sessions, req.uri().query().unwrap_or("")).await?
        }
        Endpoint::SessionCount => sessions::count(&admin.sessions).await?,
        Endpoint::Session => sessions::show(&admin.sessions, &id).await?,
        Endpoint::Invalidate => sessions::invalidate(&admin.sessions, &id).await?,
    })
}

/// The whole request body as JSON of type `T`, at most [`MAX_JSON_BYTES`]; `expected` shows
/// what it should look like.
async fn read_json<T: DeserializeOwned>(
    req: Request<RequestBody>,
    expected: &'static str,
) -> Result<T, ApiError> {
    let body: Bytes = Limited::new(req.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
        .map_err(ApiError::Body)?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|source| ApiError::Json { expected, source })
}

/// `POST /apps?name=FILE[&canary=PERCENT]` with the module file as the body.
async fn deploy(admin: &Admin, req: Request<RequestBody>) -> Result<Response<Body>, ApiError> {
    let registry = &admin.registry;
    let config = registry.config();
    let limit = config.uploads.max_bytes;
    let Ok(_uploading) = Arc::clone(&admin.uploads).try_acquire_owned() else {
        return Err(ApiError::Busy {
            max: config.uploads.max_concurrent,
        });
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(upload::UploadError::TooLarge { limit }.into());
    }
    let query = DeployQuery::decode(req.uri().query().unwrap_or(""));
    // Receive the body before refusing anything else, so the client sees the answer, not a
    // reset.
    let file = upload::receive(req.into_body(), &config.state_dir, limit).await?;
    let discard = |e: ApiError| {
        let _ = std::fs::remove_file(&file);
        e
    };
    let query = query.map_err(|e| discard(e.into()))?;
    let mode = match query.canary {
        None => DeployMode::Switch,
        Some(percent) => DeployMode::Canary(percent),
    };
    if std::fs::metadata(&file).is_ok_and(|m| m.len() == 0) {
        return Err(discard(ApiError::EmptyUpload));
    }
    let deployed = registry.deploy_upload(query.name(), &file, mode).await?;
    Ok(ok(&deploy_outcome(registry, &deployed)))
}

/// `POST /upgrade`: asks the supervisor for a new serving process.
fn upgrade() -> Result<Response<Body>, ApiError> {
    let supervisor = crate::supervisor::request_upgrade()?;
    Ok(super::reply::json(
        StatusCode::ACCEPTED,
        &UpgradeStarted {
            outcome: "upgrading".to_owned(),
            pid: std::process::id(),
            version: crate::VERSION.to_owned(),
            supervisor: supervisor.as_raw_pid(),
        },
    ))
}

/// `DELETE /apps/{app}`.
async fn undeploy(registry: &Arc<Registry>, app: String) -> Result<Response<Body>, ApiError> {
    if registry.app(&app).is_none() {
        return Err(Error::UnknownApp(app).into());
    }
    match registry.undeploy(&app).await {
        Some(version) => {
            let undeployed = version.info().version.clone();
            Ok(ok(&Undeployed { app, undeployed }))
        }
        None => Err(ApiError::NothingToUndeploy(app)),
    }
}

/// `PUT /apps/{app}/canary` with a [`CanaryRequest`].
async fn set_canary(
    registry: &Arc<Registry>,
    app: String,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let request: CanaryRequest = read_json(
        req,
        r#"{"version": "1.2.3", "percent": 10} (percent 0 to 100)"#,
    )
    .await?;
    let canary = registry
        .set_canary(&app, &request.version, request.percent)
        .await?;
    Ok(ok(&CanarySet {
        app,
        canary: canary.version.info().version.clone(),
        percent: canary.percent,
    }))
}
