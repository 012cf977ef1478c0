//! The plain HTTP listener of `--redirect-http`: every request gets a 308 to the same host and path over HTTPS, on
//! the HTTPS listener's port. It shares the accept-time limits and the connection cap with the main listener.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::http::{header, uri::Authority, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::server::Edge;

/// Accepts and answers until `stopped` resolves.
pub(crate) async fn serve(listener: TcpListener, https_port: u16, edge: Edge, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(permit) = edge.admit(peer) else { continue };
                let edge = edge.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        std::future::ready(Ok::<_, Infallible>(redirect(&request, https_port)))
                    });
                    crate::server::serve_connection(stream, service, &edge).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed (redirect-http)");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The answer to one request: 308 to `https://HOST[:PORT]/path?query`, or 400 without a usable host.
pub fn redirect<B>(request: &Request<B>, https_port: u16) -> Response<Full<Bytes>> {
    let host = request
        .uri()
        .authority()
        .cloned()
        .or_else(|| request.headers().get(header::HOST)?.to_str().ok()?.parse::<Authority>().ok())
        .filter(|authority| !authority.host().is_empty() && !authority.as_str().contains('@'));
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, "a Host header is needed to redirect to HTTPS\n");
    };
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if https_port == 443 {
        format!("https://{}{path}", host.host())
    } else {
        format!("https://{}:{https_port}{path}", host.host())
    };
    let Ok(location) = HeaderValue::from_str(&location) else {
        return plain(StatusCode::BAD_REQUEST, "cannot redirect this request\n");
    };
    let mut response = plain(StatusCode::PERMANENT_REDIRECT, "");
    response.headers_mut().insert(header::LOCATION, location);
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: Option<&str>, uri: &str, port: u16) -> (StatusCode, Option<String>) {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        let response = redirect(&builder.body(()).unwrap(), port);
        let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    #[test]
    fn redirects_to_the_same_host_and_path_on_the_https_port() {
        let to = |host, uri, port| location(Some(host), uri, port);
        assert_eq!(
            to("example.org", "/ws?x=1", 443),
            (StatusCode::PERMANENT_REDIRECT, Some("https://example.org/ws?x=1".into()))
        );
        assert_eq!(to("example.org:80", "/", 8443).1.as_deref(), Some("https://example.org:8443/"));
        assert_eq!(to("[2001:db8::1]:80", "/a", 443).1.as_deref(), Some("https://[2001:db8::1]/a"));
        assert_eq!(location(None, "http://example.net/p", 443).1.as_deref(), Some("https://example.net/p"));
    }

    #[test]
    fn requests_without_a_usable_host_get_400() {
        assert_eq!(location(None, "/", 443), (StatusCode::BAD_REQUEST, None));
        assert_eq!(location(Some("a b"), "/", 443).0, StatusCode::BAD_REQUEST);
        assert_eq!(location(Some("user@evil.example"), "/", 443).0, StatusCode::BAD_REQUEST);
    }
}
