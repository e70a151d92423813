//! The OpenAPI 3 document of the REST API, served at `/api/v1/openapi.json`, built from the route table
//! (`crate::api::documented`: every path the server registers, its summary and its request type) and from
//! the request types themselves (schemas derived by utoipa from the serde attributes that parse them).
//! `/auth/ctrl/{method}` is documented once per method of the region's API. The checked-in copy
//! (`master-controller/openapi.json`, for client generators) is kept equal to it by a test.

use actix_web::HttpResponse;
use serde_json::{Value, json};

fn op(summary: &str, request: Option<&str>, auth: bool) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            "200": {"description": "OK"},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"},
            "409": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(schema) = request {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    if auth {
        o["security"] = json!([{"bearer": []}]);
    }
    json!({ "post": o })
}

fn obj(props: &[&str]) -> Value {
    let p: serde_json::Map<String, Value> = props
        .iter()
        .map(|k| (k.to_string(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": p})
}

/// One route of the table (`crate::api::documented`).
pub struct Route {
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Option<RequestType>,
}

/// A request body's schema name and the schemas it needs (its own first), derived from the Rust type that
/// parses it.
pub struct RequestType {
    pub name: String,
    pub schemas: Vec<(String, Value)>,
}

pub fn request_type<T: utoipa::ToSchema>() -> RequestType {
    let json = |s| serde_json::to_value(s).expect("a schema serializes");
    let mut refs = Vec::new();
    T::schemas(&mut refs);
    let name = T::name().into_owned();
    let mut schemas = vec![(name.clone(), json(T::schema()))];
    schemas.extend(refs.into_iter().map(|(n, s)| (n, json(s))));
    RequestType { name, schemas }
}

/// The document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    schemas.insert("Error".into(), obj(&["message"]));
    let mut add = |path: String, summary: &str, request: Option<RequestType>| {
        let name = request.map(|t| {
            schemas.extend(t.schemas);
            t.name
        });
        let auth = path.starts_with("/auth/");
        paths.insert(format!("/api/v1{path}"), op(summary, name.as_deref(), auth));
    };
    for r in crate::api::documented() {
        match r.path.strip_suffix("{method}") {
            // One path per method of the region's API.
            Some(prefix) => {
                for m in crate::api::ctrl::methods() {
                    add(
                        format!("{prefix}{m}"),
                        &format!("{m} in a region (forwarded to its controller)"),
                        r.request.as_ref().map(|t| RequestType {
                            name: t.name.clone(),
                            schemas: t.schemas.clone(),
                        }),
                    );
                }
            }
            None => add(r.path.to_string(), r.summary, r.request),
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Edge Cloud Platform master controller", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": schemas
        }
    })
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
