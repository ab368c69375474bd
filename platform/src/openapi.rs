//! OpenAPI 3.1: each service builds its document from its own handlers (utoipa + utoipa-axum,
//! so a route cannot be served without being documented, nor documented without being served),
//! serves it at `/openapi.json`, and a browsable page at `/docs` (Swagger UI, vendored in the binary so
//! it works offline) from which a request can be tried.
//!
//! Every operation has an `operation_id`, unique in its document and stable
//! across releases: client generators name their functions after it, so a renamed id breaks every
//! generated client, and a duplicate makes the document invalid (e2e `conformance::*`).

use axum::Router;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa::{IntoResponses, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::problem::FieldProblem;

/// An `application/problem+json` body (RFC 9457).
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: the body is written by `ApiError`
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/validation-error`.
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// The failing fields, for a 422.
    errors: Option<Vec<FieldProblem>>,
    /// For a 403: the permission the route needs.
    permission: Option<String>,
    /// For a 403: the caller's role.
    role: Option<String>,
}

/// The errors every command route may answer (API.md, "Errors").
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommandErrors {
    /// The 400 that [`crate::ApiError::BadRequest`] answers.
    #[response(
        status = 400,
        description = "Malformed JSON, unknown field, wrong type, invalid id",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    /// The 401 that [`crate::ApiError::Unauthorized`] answers.
    #[response(
        status = 401,
        description = "Missing, unknown, inactive or expired API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The 403 that [`crate::ApiError::Forbidden`] answers.
    #[response(
        status = 403,
        description = "The caller's role lacks the route's permission (named in the body), or the resource's own rule refuses it (an agent ending another agent's session)",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// The 404 that [`crate::ApiError::NotFound`] answers.
    #[response(
        status = 404,
        description = "No such resource in this tenant",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// The 409 that [`crate::ApiError::Conflict`] answers.
    #[response(
        status = 409,
        description = "A domain rule refuses the command, or a conflict retries could not resolve",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// The 412 that [`crate::ApiError::PreconditionFailed`] answers.
    #[response(
        status = 412,
        description = "If-Match does not match the current version",
        content_type = "application/problem+json"
    )]
    PreconditionFailed(Problem),
    /// The 413 that [`crate::ApiError::PayloadTooLarge`] answers.
    #[response(
        status = 413,
        description = "Body over 256 KiB",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    /// The 415 that [`crate::ApiError::UnsupportedMediaType`] answers.
    #[response(
        status = 415,
        description = "Body not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(Problem),
    /// The 422 that [`crate::ApiError::Unprocessable`] answers.
    #[response(
        status = 422,
        description = "A field rule is broken, or an Idempotency-Key was reused with another body",
        content_type = "application/problem+json"
    )]
    Unprocessable(Problem),
    /// The 429 that [`crate::ApiError::TooManyRequests`] answers.
    #[response(
        status = 429,
        description = "The API key is over its rate limit; Retry-After says when to try again",
        content_type = "application/problem+json"
    )]
    TooManyRequests(Problem),
    /// The 503 that [`crate::ApiError::Unavailable`] answers.
    #[response(
        status = 503,
        description = "Not now: the database is unreachable, a statement or the request ran out of time, or the service is shedding load; Retry-After says when to try again",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The errors every query route may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum QueryErrors {
    /// The 400 that [`crate::ApiError::BadRequest`] answers.
    #[response(
        status = 400,
        description = "Invalid id or query parameter",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    /// The 401 that [`crate::ApiError::Unauthorized`] answers.
    #[response(
        status = 401,
        description = "Missing, unknown, inactive or expired API key",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The 404 that [`crate::ApiError::NotFound`] answers.
    #[response(
        status = 404,
        description = "No such resource in this tenant",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// The 429 that [`crate::ApiError::TooManyRequests`] answers.
    #[response(
        status = 429,
        description = "The API key is over its rate limit; Retry-After says when to try again",
        content_type = "application/problem+json"
    )]
    TooManyRequests(Problem),
    /// The 503 that [`crate::ApiError::Unavailable`] answers.
    #[response(
        status = 503,
        description = "min_version not reached within wait_ms, or database unreachable",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

/// The 422 a query answers for parameters that exclude each other (each is valid alone).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ParameterRule {
    /// The 422 that [`crate::ApiError::Unprocessable`] answers.
    #[response(
        status = 422,
        description = "Query parameters that exclude each other, each valid alone (e.g. as_of with as_of_version, after with before)",
        content_type = "application/problem+json"
    )]
    Unprocessable(Problem),
}

/// A service's document: its frame (title, description, the bearer scheme every `/v1` route
/// uses) around the paths its router registered.
pub fn document(title: &str, description: &str, paths: OpenApi) -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .description(Some(description))
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key: `Authorization: Bearer vk_...`"))
                .build(),
        ),
    );
    // The error bodies every operation refers to (`#/components/schemas/Problem`).
    components.schemas.insert(
        "Problem".into(),
        <Problem as utoipa::PartialSchema>::schema(),
    );
    components.schemas.insert(
        "FieldProblem".into(),
        <FieldProblem as utoipa::PartialSchema>::schema(),
    );
    doc.merge(paths);
    permissions(non_null_parameters(doc))
}

/// Each operation says the permission it needs and the roles that hold it
/// ([`crate::auth::permissions`], the table the services enforce): `x-permission`, `x-roles`, a
/// line of its description, and its 403 where a role can lack it. An operation the table does
/// not know gets none of these, and is refused to everyone when asked for (a test reads the
/// document for such operations).
fn permissions(mut doc: OpenApi) -> OpenApi {
    use crate::auth::permissions::required;
    use crate::auth::{Permission, Role};
    use axum::http::Method;
    use utoipa::openapi::extensions::ExtensionsBuilder;
    use utoipa::openapi::RefOr;
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, operation) in operations {
            let (Some(operation), Some(permission)) = (operation, required(&method, path)) else {
                continue;
            };
            let roles: Vec<&str> = permission.roles().map(Role::as_str).collect();
            let extensions = ExtensionsBuilder::new()
                .add("x-permission", permission.as_str())
                .add("x-roles", roles.clone())
                .build();
            operation
                .extensions
                .get_or_insert_with(Default::default)
                .merge(extensions);
            let line = format!("Permission: `{permission}` (roles: {}).", roles.join(", "));
            operation.description = Some(match operation.description.take() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{line}"),
                _ => line,
            });
            if permission != Permission::Read {
                operation
                    .responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(
                                    "The caller's role lacks the permission (named in the body)",
                                )
                                .content(
                                    "application/problem+json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                            "Problem",
                                        )))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
    doc
}

/// A path, query or header parameter is a string on the wire: it can be absent, never JSON
/// `null`. utoipa documents an `Option<T>` parameter as `type: [T, "null"]`, which tells a client
/// (and schemathesis) that `?limit=null` is valid; drop the `null` so the document says only
/// what the service accepts. String parameters also say that they hold no NUL (`%00` is 400).
fn non_null_parameters(mut doc: OpenApi) -> OpenApi {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    use utoipa::openapi::RefOr;
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
                    if let SchemaType::Array(types) = &object.schema_type {
                        let kept: Vec<Type> = types
                            .iter()
                            .filter(|t| **t != Type::Null)
                            .cloned()
                            .collect();
                        object.schema_type = match kept.as_slice() {
                            [one] => SchemaType::Type(one.clone()),
                            _ => SchemaType::Array(kept),
                        };
                    }
                    // A NUL in a path or query is refused (400): say so.
                    if object.schema_type == SchemaType::Type(Type::String)
                        && object.pattern.is_none()
                        && object.enum_values.is_none()
                    {
                        object.pattern = Some("^[^\\u0000]*$".into());
                    }
                }
            }
        }
    }
    doc
}

/// Adds `/openapi.json` and `/docs` to the document and serves both.
pub fn docs_router(mut doc: OpenApi) -> Router {
    for (path, operation_id, summary, content_type) in [
        (
            "/openapi.json",
            "get_openapi_document",
            "This OpenAPI document",
            "application/json",
        ),
        (
            "/docs",
            "get_docs_page",
            "A browsable page of this document, from which requests can be tried",
            "text/html",
        ),
    ] {
        let operation = OperationBuilder::new()
            .operation_id(Some(operation_id))
            .summary(Some(summary))
            .tag("operations")
            .response(
                "200",
                ResponseBuilder::new().description(content_type).build(),
            )
            .build();
        doc.paths
            .add_path_operation(path, vec![HttpMethod::Get], operation);
    }
    let config = Config::new(["/openapi.json"])
        .try_it_out_enabled(true)
        .persist_authorization(true);
    Router::new().merge(
        SwaggerUi::new("/docs")
            .url("/openapi.json", doc)
            .config(config),
    )
}
