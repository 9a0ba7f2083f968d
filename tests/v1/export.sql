-- A metadata export of the replaced system, as `turso db shell <db> .dump` writes it: its tables with the
-- columns its databases have (`email` appended by a later migration, so after `created_at`), positional
-- inserts, secrets as that system stores them (link secrets as text, tokens as SHA-256 hex). Test data only.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE tenants (
  id            TEXT PRIMARY KEY,
  name          TEXT NOT NULL,
  plan          TEXT NOT NULL DEFAULT 'free',
  key_prefix    TEXT NOT NULL UNIQUE,
  hmac_secret   TEXT NOT NULL,
  encryption_key TEXT NOT NULL,
  rate_limit_rps INTEGER NOT NULL DEFAULT 100,
  created_at    INTEGER NOT NULL DEFAULT (unixepoch())
, email TEXT);
INSERT INTO tenants VALUES('0mj1x2y3z4a5b6c7d8e9f0g1h','Six Commerce','pro','6vct','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',100,1767225600,'ops@six.example');
INSERT INTO tenants VALUES('0mj1x2y3zkkkkkkkkkkkkkkkk','Kilo Nine','starter','k9zz','0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef','00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff',250,1767312000,NULL);
CREATE TABLE tracking_urls (
  id            TEXT PRIMARY KEY,
  tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  destination   TEXT NOT NULL,
  created_at    INTEGER NOT NULL DEFAULT (unixepoch())
);
INSERT INTO tracking_urls VALUES('tu_019502a1-7b3c-7def-8abc-1234567890ab','0mj1x2y3z4a5b6c7d8e9f0g1h','https://offer.example/spring?ref=tu',1767225700);
INSERT INTO tracking_urls VALUES('tu_019502a1-7b3c-7def-8abc-1234567890ac','0mj1x2y3zkkkkkkkkkkkkkkkk','https://kilo.example/',1767312100);
CREATE TABLE ingest_tokens (
  id            TEXT PRIMARY KEY,
  tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  key_prefix    TEXT NOT NULL,
  token_hash    TEXT NOT NULL UNIQUE,
  name          TEXT NOT NULL DEFAULT 'Default',
  plugin_id     TEXT,
  expires_at    INTEGER,
  revoked       INTEGER NOT NULL DEFAULT 0,
  last_used_at  INTEGER,
  created_at    INTEGER NOT NULL DEFAULT (unixepoch())
);
INSERT INTO ingest_tokens VALUES('0mj1x2y3zttttttttttttttt1','0mj1x2y3z4a5b6c7d8e9f0g1h','6vct','040521685acae29b668be94fcc365781e61bf4a4239586b55bc4c35c2e1e31c7','server',NULL,NULL,0,NULL,1767225800);
INSERT INTO ingest_tokens VALUES('0mj1x2y3zttttttttttttttt2','0mj1x2y3z4a5b6c7d8e9f0g1h','6vct','6d2ea151376f3af4d113eca7214bece585e9081f0a2f0c8d42278f641356564a','old',NULL,NULL,1,NULL,1767225900);
INSERT INTO ingest_tokens VALUES('0mj1x2y3zttttttttttttttt3','0mj1x2y3zkkkkkkkkkkkkkkkk','k9zz','6cb5c5b21d1083591a445bf628b15665fc4136f523b04838303bb5167660dd49','plugin','stripe',4102444800,0,NULL,1767312200);
COMMIT;
