-- Projects a `shared` image is shared with, and whether they accepted it.
CREATE TABLE image_members (
    image_id   TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (image_id, member)
) WITHOUT ROWID;
-- Listings find the shared images of a project by member and status.
CREATE INDEX image_members_by_member ON image_members (member, status, image_id);
