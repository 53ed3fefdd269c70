//! Tasks (glance-v2 tasks): `GET /v2/tasks`, `GET /v2/tasks/{id}` (admins, Glance's
//! `tasks_api_access`), `GET /v2/images/{id}/tasks` (anyone who sees the image: its own
//! project's tasks), and their schemas. Glance writes each of the three in its own shape, and
//! so does this.

use axum::http::{StatusCode, header};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::{Ctx, Reply, not_authorized, store_fault};
use crate::api::compute::views::isotime;
use crate::api::fault::Fault;
use crate::api::quote_plus;
use crate::domain::policy::Rule;
use crate::domain::task::{Task, TaskQuery, TaskSortKey, TaskStatus};
use crate::store::StoreError;

const DEFAULT_LIMIT: usize = 25;
const MAX_LIMIT: usize = 1000;

fn bad_request(message: impl AsRef<str>) -> Fault {
    Fault::explained(StatusCode::BAD_REQUEST, message)
}

/// The full view (`GET /v2/tasks/{id}`).
pub fn full(task: &Task) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(task.id));
    v.insert("input".into(), task.input.clone().unwrap_or(Value::Null));
    v.insert("type".into(), json!(task.kind));
    v.insert("status".into(), json!(task.status.as_str()));
    v.insert("owner".into(), json!(task.owner));
    v.insert("message".into(), json!(task.message));
    v.insert("result".into(), task.result.clone().unwrap_or(Value::Null));
    v.insert("created_at".into(), json!(isotime(task.created_at)));
    v.insert("updated_at".into(), json!(isotime(task.updated_at)));
    v.insert("self".into(), json!(format!("/v2/tasks/{}", task.id)));
    v.insert("schema".into(), json!("/v2/schemas/task"));
    for (key, value) in [("image_id", &task.image_id), ("request_id", &task.request_id), ("user_id", &task.user_id)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            v.insert(key.into(), json!(value));
        }
    }
    if let Some(at) = task.expires_at {
        v.insert("expires_at".into(), json!(isotime(at)));
    }
    Value::Object(v)
}

/// The listing's view of a task (`GET /v2/tasks`).
fn stub(task: &Task) -> Value {
    let mut v = Map::new();
    v.insert("id".into(), json!(task.id));
    v.insert("type".into(), json!(task.kind));
    v.insert("status".into(), json!(task.status.as_str()));
    v.insert("owner".into(), json!(task.owner));
    v.insert("created_at".into(), json!(isotime(task.created_at)));
    v.insert("updated_at".into(), json!(isotime(task.updated_at)));
    v.insert("self".into(), json!(format!("/v2/tasks/{}", task.id)));
    v.insert("schema".into(), json!("/v2/schemas/task"));
    if let Some(at) = task.expires_at {
        v.insert("expires_at".into(), json!(isotime(at)));
    }
    Value::Object(v)
}

/// A database time as Glance's default serializer writes it: microseconds, no zone.
fn db_time(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
    t.checked_to_offset(time::UtcOffset::UTC).unwrap_or(t).format(&fmt).unwrap_or_default()
}

/// The image's view of a task (`GET /v2/images/{id}/tasks`): the record as stored.
fn record(task: &Task) -> Value {
    json!({
        "id": task.id,
        "type": task.kind,
        "status": task.status.as_str(),
        "owner": task.owner,
        "expires_at": task.expires_at.map(db_time),
        "created_at": db_time(task.created_at),
        "updated_at": db_time(task.updated_at),
        "deleted_at": null,
        "deleted": false,
        "image_id": task.image_id,
        "request_id": task.request_id,
        "user_id": task.user_id,
        "input": task.input,
        "result": task.result,
        "message": task.message,
    })
}

/// Glance's `tasks_api_access`, checked before anything else of `/v2/tasks`.
fn access(ctx: &Ctx) -> Result<(), Fault> {
    ctx.authorize(&Rule::TasksApiAccess, None, || not_authorized(&Rule::TasksApiAccess))
}

/// `GET /v2/tasks`.
pub async fn list(ctx: &Ctx) -> Result<Reply, Fault> {
    access(ctx)?;
    let mut query = TaskQuery {
        owner: (!ctx.principal.is_admin).then(|| ctx.principal.project_id.clone()),
        status: None,
        kind: None,
        image_id: None,
        sort_key: TaskSortKey::CreatedAt,
        descending: true,
        marker: None,
        limit: DEFAULT_LIMIT,
    };
    for (k, v) in &ctx.query {
        match k.as_str() {
            "limit" => {
                let n: i64 = v.trim().parse().map_err(|_| bad_request("limit param must be an integer"))?;
                if n < 0 {
                    return Err(bad_request("limit param must be positive"));
                }
                query.limit = usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
            }
            "marker" => {
                if uuid::Uuid::parse_str(v).is_err() {
                    return Err(bad_request("Invalid marker format"));
                }
                query.marker = Some(v.clone());
            }
            "sort_dir" => {
                query.descending = match v.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(bad_request(format!("Invalid sort direction: {v}"))),
                }
            }
            "sort_key" => {
                query.sort_key =
                    TaskSortKey::parse(v).ok_or_else(|| bad_request("Sort key supplied was not valid."))?;
            }
            "status" => {
                query.status =
                    Some(TaskStatus::parse(v).ok_or_else(|| bad_request(format!("Invalid status value: {v}")))?);
            }
            // As Glance: the only type a listing filters by is the legacy `import`.
            "type" if v == "import" => query.kind = Some(v.clone()),
            "type" => return Err(bad_request(format!("Invalid type value: {v}"))),
            "image_id" => query.image_id = Some(v.clone()),
            "owner" if ctx.principal.is_admin => query.owner = Some(v.clone()),
            _ => {}
        }
    }
    let tasks = if query.limit == 0 {
        Vec::new()
    } else {
        ctx.state.store.list_tasks(&query).await.map_err(|e| match e {
            StoreError::MarkerNotFound(m) => bad_request(format!("Task with the given id {m} was not found")),
            other => store_fault(other, ""),
        })?
    };
    // `first` and `next` repeat the request's query (each key once, its last value), without
    // the marker; `next` adds the last task's id.
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &ctx.query {
        match params.iter_mut().find(|(pk, _)| *pk == k.as_str()) {
            Some(p) => p.1 = v.as_str(),
            None => params.push((k.as_str(), v.as_str())),
        }
    }
    params.retain(|(k, _)| *k != "marker");
    let encode = |params: &[(&str, &str)]| -> String {
        params.iter().map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v))).collect::<Vec<_>>().join("&")
    };
    let mut body = Map::new();
    body.insert("tasks".into(), Value::Array(tasks.iter().map(stub).collect()));
    let first = if params.is_empty() { "/v2/tasks".to_owned() } else { format!("/v2/tasks?{}", encode(&params)) };
    body.insert("first".into(), json!(first));
    body.insert("schema".into(), json!("/v2/schemas/tasks"));
    if query.limit > 0
        && tasks.len() == query.limit
        && let Some(last) = tasks.last()
    {
        params.push(("marker", last.id.as_str()));
        body.insert("next".into(), json!(format!("/v2/tasks?{}", encode(&params))));
    }
    Ok(Reply::ok(&Value::Object(body)))
}

/// `GET /v2/tasks/{id}`: 404 for another project's task, as for none.
pub async fn show(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    access(ctx)?;
    let task = ctx.state.store.get_task(id).await.map_err(|e| store_fault(e, id))?;
    let visible = |t: &Task| ctx.principal.is_admin || t.owner == ctx.principal.project_id;
    match task.filter(visible) {
        Some(task) => Ok(Reply::ok(&full(&task))),
        None => Err(Fault::explained(StatusCode::NOT_FOUND, format!("Could not find task {id}"))),
    }
}

/// `DELETE /v2/tasks/{id}`: never (tasks expire).
pub fn delete(ctx: &Ctx) -> Result<Reply, Fault> {
    access(ctx)?;
    Err(Fault::explained(
        StatusCode::METHOD_NOT_ALLOWED,
        "This operation is currently not permitted on Glance Tasks. They are auto deleted after reaching the time \
         based on their expires_at property.",
    )
    .with_header(header::ALLOW, axum::http::HeaderValue::from_static("GET")))
}

/// `POST /v2/tasks`: the legacy task API. Its one type, `import`, is refused: imports go
/// through `POST /v2/images/{id}/import`.
pub fn create(ctx: &Ctx) -> Result<Reply, Fault> {
    access(ctx)?;
    Err(bad_request(
        "Tasks of type 'import' are not available: import image data with POST /v2/images/{image_id}/import.",
    ))
}

/// `GET /v2/images/{id}/tasks`: the import tasks of an image the caller sees, its own
/// project's (all of them for admins).
pub async fn of_image(ctx: &Ctx, id: &str) -> Result<Reply, Fault> {
    crate::store::get_image(&*ctx.state.store, &ctx.principal, id).await.map_err(|e| match e {
        StoreError::NotFound => Fault::bare(StatusCode::NOT_FOUND),
        other => store_fault(other, id),
    })?;
    let query = TaskQuery {
        owner: (!ctx.principal.is_admin).then(|| ctx.principal.project_id.clone()),
        status: None,
        kind: None,
        image_id: Some(id.to_owned()),
        sort_key: TaskSortKey::CreatedAt,
        descending: false,
        marker: None,
        limit: MAX_LIMIT,
    };
    let tasks = ctx.state.store.list_tasks(&query).await.map_err(|e| store_fault(e, id))?;
    Ok(Reply::ok(&json!({"tasks": tasks.iter().map(record).collect::<Vec<_>>()})))
}

const TASK_ID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

/// The properties of the task schema, in Glance's order (`partial`: the listing's, without
/// `input`, `result` and `message`).
fn task_properties(partial: bool) -> Value {
    let string = |description: &str| json!({"description": description, "type": "string"});
    let mut p = Map::new();
    p.insert(
        "id".into(),
        json!({"description": "An identifier for the task", "pattern": TASK_ID_PATTERN, "type": "string"}),
    );
    p.insert(
        "type".into(),
        json!({"description": "The type of task represented by this content",
               "enum": ["import", "api_image_import", "location_import"], "type": "string"}),
    );
    p.insert(
        "status".into(),
        json!({"description": "The current status of this task",
               "enum": ["pending", "processing", "success", "failure"], "type": "string"}),
    );
    if !partial {
        p.insert(
            "input".into(),
            json!({"description": "The parameters required by task, JSON blob", "type": ["null", "object"]}),
        );
        p.insert(
            "result".into(),
            json!({"description": "The result of current task, JSON blob", "type": ["null", "object"]}),
        );
    }
    p.insert("owner".into(), string("An identifier for the owner of this task"));
    if !partial {
        p.insert(
            "message".into(),
            string("Human-readable informative message only included when appropriate (usually on failure)"),
        );
    }
    p.insert("image_id".into(), string("Image associated with the task"));
    p.insert("request_id".into(), string("Human-readable informative request-id"));
    p.insert("user_id".into(), string("User associated with the task"));
    p.insert(
        "expires_at".into(),
        json!({"description": "Datetime when this resource would be subject to removal", "type": ["null", "string"]}),
    );
    p.insert("created_at".into(), string("Datetime when this resource was created"));
    p.insert("updated_at".into(), string("Datetime when this resource was updated"));
    p.insert("self".into(), json!({"readOnly": true, "type": "string"}));
    p.insert("schema".into(), json!({"readOnly": true, "type": "string"}));
    Value::Object(p)
}

/// `GET /v2/schemas/task`.
pub fn task_schema() -> Value {
    json!({"name": "task", "properties": task_properties(false)})
}

/// `GET /v2/schemas/tasks`.
pub fn tasks_schema() -> Value {
    json!({
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": task_properties(true)}},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    })
}
