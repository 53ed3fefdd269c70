//! Glance's tasks: the record of an image import (`api_image_import`), created when the import
//! is accepted, run in the background, and kept for a while after it ends (glance-v2 tasks).

use serde_json::Value;
use time::OffsetDateTime;

/// A task's life: `pending → processing → success | failure` (or `pending → failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Pending,
    Processing,
    Success,
    Failure,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 4] = [Self::Pending, Self::Processing, Self::Success, Self::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the task has ended (its record then expires).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failure)
    }
}

/// The type of an interoperable image import.
pub const API_IMAGE_IMPORT: &str = "api_image_import";

/// How long an ended task is kept (Glance's `task_time_to_live`, 48 hours).
pub const TIME_TO_LIVE: time::Duration = time::Duration::hours(48);

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    /// `api_image_import` (or the legacy `import`).
    pub kind: String,
    pub status: TaskStatus,
    /// The project the task belongs to.
    pub owner: String,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    /// The request that made it (a JSON object).
    pub input: Option<Value>,
    /// What it produced (a JSON object), once it succeeded.
    pub result: Option<Value>,
    /// Human-readable progress or failure (`""` when none).
    pub message: String,
    /// When the record goes, once the task ended.
    pub expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// The imagemeta node running it (not shown): a task whose node is gone fails visibly.
    pub node: Option<String>,
}

impl Task {
    /// A new pending task.
    pub fn new(id: String, kind: &str, owner: String, now: OffsetDateTime) -> Task {
        Task {
            id,
            kind: kind.to_owned(),
            status: TaskStatus::Pending,
            owner,
            image_id: None,
            request_id: None,
            user_id: None,
            input: None,
            result: None,
            message: String::new(),
            expires_at: None,
            created_at: now,
            updated_at: now,
            node: None,
        }
    }

    /// Ends the task: `success` with `result`, or `failure` with `message`. An ended task stays
    /// as it ended.
    pub fn end(&mut self, outcome: Result<Value, String>, now: OffsetDateTime) {
        if self.status.is_final() {
            return;
        }
        match outcome {
            Ok(result) => {
                self.status = TaskStatus::Success;
                self.result = Some(result);
            }
            Err(message) => {
                self.status = TaskStatus::Failure;
                self.message = message;
            }
        }
        self.expires_at = Some(now + TIME_TO_LIVE);
        self.node = None;
    }
}

/// What a task listing asks for (`GET /v2/tasks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only this project's tasks (`None`: every project's).
    pub owner: Option<String>,
    pub status: Option<TaskStatus>,
    pub kind: Option<String>,
    pub image_id: Option<String>,
    pub sort_key: TaskSortKey,
    pub descending: bool,
    /// The id of the last task of the previous page.
    pub marker: Option<String>,
    pub limit: usize,
}

/// The columns a task listing sorts by; `created_at` then `id` break ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSortKey {
    Id,
    Type,
    Status,
    Owner,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
    ImageId,
    RequestId,
    UserId,
}

impl TaskSortKey {
    pub fn parse(s: &str) -> Option<TaskSortKey> {
        Some(match s {
            "id" => Self::Id,
            "type" => Self::Type,
            "status" => Self::Status,
            "owner" => Self::Owner,
            "expires_at" => Self::ExpiresAt,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "image_id" => Self::ImageId,
            "request_id" => Self::RequestId,
            "user_id" => Self::UserId,
            _ => return None,
        })
    }

    /// The column, as both stores name it (nullable ones compare as empty or zero).
    pub fn column(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Type => "type",
            Self::Status => "status",
            Self::Owner => "owner",
            Self::ExpiresAt => "COALESCE(expires_at, 0)",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::ImageId => "COALESCE(image_id, '')",
            Self::RequestId => "COALESCE(request_id, '')",
            Self::UserId => "COALESCE(user_id, '')",
        }
    }

    /// Whether the column holds text (else microseconds).
    pub fn is_text(self) -> bool {
        !matches!(self, Self::ExpiresAt | Self::CreatedAt | Self::UpdatedAt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_ends_once() {
        let now = crate::domain::now();
        let mut t = Task::new("t".into(), API_IMAGE_IMPORT, "p".into(), now);
        t.node = Some("n".into());
        t.end(Ok(serde_json::json!({"image_id": "i"})), now);
        assert_eq!((t.status, t.expires_at, t.node.as_deref()), (TaskStatus::Success, Some(now + TIME_TO_LIVE), None));
        t.end(Err("late".into()), now);
        assert_eq!((t.status, t.message.as_str()), (TaskStatus::Success, ""));
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
    }
}
