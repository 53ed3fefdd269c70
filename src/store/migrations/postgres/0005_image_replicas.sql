-- Further copies of an image's data in other stores (copy-image, imports to several stores):
-- a JSON array of [store, location] pairs, NULL for none (domain::Replica).
ALTER TABLE images ADD COLUMN replicas TEXT;
