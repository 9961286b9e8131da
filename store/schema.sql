-- The default lookup table that wxlookup reads (and `wxlookup seed` fills).
--
-- part_no is the workpiece number as the plant writes it. Its collation is
-- utf8mb4_unicode_ci, case- and width-insensitive, on purpose: wxlookup looks keys up
-- normalised (case-folded, full-width folded to half-width), so two rows that differ only
-- that way ('A7-001' and 'a7-001') would be one key to the service. The primary key under
-- this collation refuses such a pair, and a point read by the normalised key finds the
-- stored spelling with one index probe.
--
-- updated_at is stamped by the server on every insert and change; the loader's incremental
-- refresh reads rows by it (hence the index), in UTC (the loader's session time zone).
CREATE TABLE IF NOT EXISTS workpiece_location (
  part_no    VARCHAR(64)  NOT NULL,
  location   VARCHAR(255) NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (part_no),
  KEY idx_updated_at (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
