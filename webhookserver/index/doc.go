// Package index is the auth server's key index: from the SHA-256 hash of
// each key version to the compiled policy of its key record (authz.Entry),
// kept in pointer-free tables (a text arena, a table of policy classes) so
// that 100,000 keys cost the garbage collector next to nothing.
//
// It owns the rules of the table itself: one key hash, one owner (the record
// created first keeps a hash two records claim), and fail-closed loading of
// records with parts that cannot be used. Upsert converts a record.Record
// into authz's plain RecordSpec; authz compiles it.
//
// Import rules: index imports authz (never the other way round) and the
// internal leaves apikey and record; it imports no other auth server package
// (the front-end, the rate limiters, the record watch) and none imports it
// but the wiring that feeds it and hands it to the front-end.
package index
