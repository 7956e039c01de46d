// Package quota turns a rate-limit identity (the UID of a MeterrAPIKey,
// which rotation keeps) into the 64-bit key that the auth server's
// in-memory limiter counts under. The decision computes it once per key
// record (webhookserver/authz.Compile), so that a request never reads the
// identity's bytes, and the limiter computes it again from the identity when
// a record goes (webhookserver/ratelimit.Memory.Forget): the two must agree,
// so the function is written once, here.
package quota

import (
	"crypto/sha256"
	"encoding/binary"
)

// Key returns the first 64 bits of the SHA-256 of id. Two identities share a
// key, and so a count, with a probability of about 3 in 10^10 among 100,000
// keys, and no one can aim for it: the identities are UIDs the API server
// chooses.
func Key(id string) uint64 {
	s := sha256.Sum256([]byte(id))
	return binary.LittleEndian.Uint64(s[:8])
}
