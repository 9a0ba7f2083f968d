//! `GET /dashboard/...`: the dashboard, embedded in the node (`tracker-dashboard`), answered as the Worker answers
//! it (`tracker_protocol::dashboard`). The page signs in through `/api/session` on the same origin.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = tracker_dashboard::answer(uri.path(), get(header::ACCEPT_ENCODING), get(header::IF_NONE_MATCH));
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(answer.body)).into_response();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}
