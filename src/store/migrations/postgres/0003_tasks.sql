-- Glance's tasks: the record of each image import, kept until it expires after it ended
-- (as SQLite's migration 0007).
CREATE TABLE tasks (
    id         TEXT PRIMARY KEY,
    type       TEXT NOT NULL,
    status     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    image_id   TEXT,
    request_id TEXT,
    user_id    TEXT,
    input      TEXT,
    result     TEXT,
    message    TEXT NOT NULL DEFAULT '',
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    node       TEXT
);
CREATE INDEX tasks_by_created ON tasks (created_at, id COLLATE "C");
CREATE INDEX tasks_by_image ON tasks (image_id) WHERE image_id IS NOT NULL;
CREATE INDEX tasks_by_node ON tasks (node) WHERE node IS NOT NULL;
CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
