-- Glance's tasks: the record of each image import, kept until it expires after it ended.
-- `input` and `result` are JSON objects as text; times are microseconds since the epoch.
-- `node` is the imagemeta process running an unfinished task: a task whose node is gone is
-- failed by the others.
CREATE TABLE tasks (
    id         TEXT PRIMARY KEY NOT NULL,
    type       TEXT NOT NULL,
    status     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    image_id   TEXT,
    request_id TEXT,
    user_id    TEXT,
    input      TEXT,
    result     TEXT,
    message    TEXT NOT NULL DEFAULT '',
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    node       TEXT
) WITHOUT ROWID;
CREATE INDEX tasks_by_created ON tasks (created_at, id);
CREATE INDEX tasks_by_image ON tasks (image_id) WHERE image_id IS NOT NULL;
CREATE INDEX tasks_by_node ON tasks (node) WHERE node IS NOT NULL;
CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
