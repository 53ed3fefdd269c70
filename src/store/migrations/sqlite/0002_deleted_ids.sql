-- Ids of deleted images: Glance never lets an id be used twice (409 on create).
CREATE TABLE deleted_image_ids (
    id         TEXT PRIMARY KEY NOT NULL,
    deleted_at INTEGER NOT NULL
) WITHOUT ROWID;
