-- The imagemeta processes serving this catalogue, each with a lease it renews: an upload
-- whose node's lease ran out (or whose process is gone) is held by nobody.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Who holds an image's upload (`saving`), and where its partial data is staged: the node that
-- starts an upload writes both in the transaction that makes the image `saving`, before any
-- data is written.
ALTER TABLE images ADD COLUMN upload_node TEXT;
ALTER TABLE images ADD COLUMN upload_staging TEXT;
CREATE INDEX images_by_upload_node ON images (upload_node) WHERE upload_node IS NOT NULL;

-- Uploads left `saving` by an earlier version were held by a process that is gone.
UPDATE images SET upload_node = 'before-upload-leases', upload_staging = '' WHERE status = 'saving';
