//! Routes for the replaced system's clients whose configured base URL carries an ingest token
//! (`<host>/v1/<token>`): its SDK's batch client, `/ingest` and postbacks. The pure part: which endpoint a path
//! names and the path events record instead (never the token).

/// An endpoint under `/v1/<token>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Route {
    Batch,
    Ingest,
    Postback,
}

impl V1Route {
    /// The endpoint it stands for.
    pub fn endpoint(self) -> &'static str {
        match self {
            V1Route::Batch => "/batch",
            V1Route::Ingest => "/ingest",
            V1Route::Postback => "/p",
        }
    }

    /// The request path its events record.
    pub fn recorded_path(self) -> &'static str {
        match self {
            V1Route::Batch => "/v1/batch",
            V1Route::Ingest => "/v1/ingest",
            V1Route::Postback => "/v1/p",
        }
    }
}

/// `/v1/<token>/(batch|ingest|p)`: the token and the route.
pub fn route(path: &str) -> Option<(&str, V1Route)> {
    let (token, rest) = path.strip_prefix("/v1/")?.split_once('/')?;
    if token.is_empty() {
        return None;
    }
    let route = match rest {
        "batch" => V1Route::Batch,
        "ingest" => V1Route::Ingest,
        "p" => V1Route::Postback,
        _ => return None,
    };
    Some((token, route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_from_the_path_and_never_recorded() {
        assert_eq!(route("/v1/pt_6vct_abc/batch"), Some(("pt_6vct_abc", V1Route::Batch)));
        assert_eq!(route("/v1/trk_ing_x-y/p"), Some(("trk_ing_x-y", V1Route::Postback)));
        assert_eq!(
            route("/v1/t/ingest").map(|(_, r)| (r.endpoint(), r.recorded_path())),
            Some(("/ingest", "/v1/ingest"))
        );
        for other in ["/v1//batch", "/v1/t/i", "/v1/t/batch/more", "/v1/batch", "/batch", "/v2/t/batch"] {
            assert_eq!(route(other), None, "{other}");
        }
    }
}
